//! Table-driven fixtures: `tests/fixtures/plans.txt` holds readable clusters and the plan
//! each must produce, checked by hand. A new case costs a few lines of text.

use std::collections::BTreeMap;

use shoal_placement::{
    ClusterState, Epoch, Key, KeyRange, KeySample, Locality, Move, Node, NodeId, NodeStatus,
    Policy, Position, Replica, Resources, Shard, ShardHistory, ShardId, TableId, Tier, plan,
};

const FIXTURES: &str = include_str!("fixtures/plans.txt");

struct Case {
    name: String,
    policy: Policy,
    state: ClusterState,
    expected: Vec<String>,
}

fn attributes<'a>(words: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, &'a str> {
    words
        .map(|word| {
            word.split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {word}"))
        })
        .collect()
}

fn number(text: &str) -> u64 {
    text.parse()
        .unwrap_or_else(|_| panic!("not a number: {text}"))
}

fn key(text: &str) -> Key {
    Key(text.as_bytes().to_vec())
}

fn parse_policy(case: &mut Case, words: std::str::SplitWhitespace<'_>) {
    let policy = &mut case.policy;
    for (name, value) in attributes(words) {
        match name {
            "rf" => policy.replication_factor = number(value) as usize,
            "tier" => {
                policy.spread_tier = match value {
                    "region" => Tier::Region,
                    "zone" => Tier::Zone,
                    "rack" => Tier::Rack,
                    "node" => Tier::Node,
                    _ => panic!("unknown tier {value}"),
                }
            }
            "round" => policy.moves_per_round_max = number(value) as usize,
            "node" => policy.moves_per_node_max = number(value) as usize,
            "band" => policy.balance_band_ratio = value.parse().expect("ratio"),
            "abs" => policy.balance_band_abs = value.parse().expect("abs"),
            "split_qps" => policy.split_qps_min = Some(number(value)),
            "split_size" => policy.split_size_bytes_min = Some(number(value)),
            "split_hold" => policy.split_hold_ms = number(value),
            "merge_qps" => policy.merge_qps_max = Some(number(value)),
            "merge_size" => policy.merge_size_bytes_max = Some(number(value)),
            "merge_hold" => policy.merge_hold_ms = number(value),
            "cooldown" => policy.reshape_cooldown_ms = number(value),
            _ => panic!("unknown policy key {name}"),
        }
    }
}

fn parse_node(mut words: std::str::SplitWhitespace<'_>) -> Node {
    let id = words.next().expect("node id");
    let (region, zone) = words
        .next()
        .and_then(|place| place.split_once('/'))
        .expect("REGION/ZONE");
    let mut node = Node {
        id: NodeId(id.into()),
        locality: Locality {
            region: region.into(),
            zone: zone.into(),
            rack: "k0".into(),
        },
        status: NodeStatus::Alive,
        capacity: Resources {
            disk_bytes: 10_000,
            ..Resources::default()
        },
        usage: Resources::default(),
    };
    for word in words {
        match word {
            "alive" => node.status = NodeStatus::Alive,
            "suspect" => node.status = NodeStatus::Suspect,
            "dead" => node.status = NodeStatus::Dead,
            "draining" => node.status = NodeStatus::Draining,
            _ => {
                let disk = word.strip_prefix("disk=").expect("status or disk=");
                let (used, capacity) = disk.split_once('/').expect("USED/CAPACITY");
                node.usage.disk_bytes = number(used);
                node.capacity.disk_bytes = number(capacity);
            }
        }
    }
    node
}

fn parse_shard(mut words: std::str::SplitWhitespace<'_>) -> Shard {
    let id = number(words.next().expect("shard id"));
    let mut shard = Shard {
        id: ShardId(id),
        table: TableId("t".into()),
        range: KeyRange {
            start: key(&format!("s{id:04}")),
            end: Some(key(&format!("s{:04}", id + 1))),
        },
        size_bytes: 100,
        qps: 10,
        replicas: Vec::new(),
        primary: None,
        epoch: Epoch(1),
        reshaped_at_ms: None,
        samples: Vec::new(),
    };
    for (name, value) in attributes(words) {
        match name {
            "replicas" => {
                shard.replicas = value
                    .split(',')
                    .map(|replica| {
                        let (node, applied) = replica.split_once('@').expect("NODE@APPLIED");
                        Replica {
                            node: NodeId(node.into()),
                            applied: Position(number(applied)),
                        }
                    })
                    .collect()
            }
            "primary" => shard.primary = Some(NodeId(value.into())),
            "epoch" => shard.epoch = Epoch(number(value)),
            "size" => shard.size_bytes = number(value),
            "qps" => shard.qps = number(value),
            "reshaped" => shard.reshaped_at_ms = Some(number(value)),
            "range" => {
                let (start, end) = value.split_once("..").expect("START..END");
                shard.range = KeyRange {
                    start: key(start),
                    end: (!end.is_empty()).then(|| key(end)),
                };
            }
            "samples" => {
                shard.samples = value
                    .split(';')
                    .map(|sample| {
                        let parts: Vec<&str> = sample.split(':').collect();
                        assert_eq!(parts.len(), 3, "KEY:QPS:SIZE");
                        KeySample {
                            start_key: key(parts[0]),
                            qps: number(parts[1]),
                            size_bytes: number(parts[2]),
                        }
                    })
                    .collect()
            }
            _ => panic!("unknown shard key {name}"),
        }
    }
    shard
}

fn parse(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let mut expecting = false;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix("=== ") {
            cases.push(Case {
                name: name.into(),
                policy: Policy::default(),
                state: ClusterState::default(),
                expected: Vec::new(),
            });
            expecting = false;
            continue;
        }
        if line.starts_with('#') || (line.is_empty() && !expecting) {
            continue;
        }
        let case = cases.last_mut().expect("a line before the first ===");
        if expecting {
            if !line.is_empty() {
                case.expected.push(line.to_string());
            }
            continue;
        }
        let mut words = line.split_whitespace();
        match words.next().expect("a keyword") {
            "policy" => parse_policy(case, words),
            "now" => case.state.now_ms = number(words.next().expect("ms")),
            "node" => case.state.nodes.push(parse_node(words)),
            "shard" => case.state.shards.push(parse_shard(words)),
            "inflight" => {
                assert_eq!(
                    words.next(),
                    Some("add"),
                    "only `inflight add` is supported"
                );
                let shard = ShardId(number(words.next().expect("shard")));
                let target = NodeId(words.next().expect("node").into());
                case.state
                    .in_flight
                    .push(Move::AddReplica { shard, target });
            }
            "history" => {
                let shard = ShardId(number(words.next().expect("shard")));
                let mut entry = ShardHistory::default();
                for (name, value) in attributes(words) {
                    match name {
                        "hot" => entry.hot_since_ms = Some(number(value)),
                        "cold" => entry.cold_since_ms = Some(number(value)),
                        _ => panic!("unknown history key {name}"),
                    }
                }
                case.state.history.shards.insert(shard, entry);
            }
            "expect" => expecting = true,
            other => panic!("unknown keyword {other}"),
        }
    }
    cases
}

#[test]
fn fixtures() {
    let cases = parse(FIXTURES);
    assert!(cases.len() >= 10, "fixtures file parsed");
    let mut failures = Vec::new();
    for case in &cases {
        let plan = plan(&case.state, &case.policy)
            .unwrap_or_else(|e| panic!("{}: planner refused: {e}", case.name));
        let actual: Vec<String> = plan.to_string().lines().map(str::to_string).collect();
        if actual != case.expected {
            failures.push(format!(
                "=== {}\nexpected:\n{}\nactual:\n{}",
                case.name,
                case.expected.join("\n"),
                actual.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}
