//! `plan_bench`: runs the placement planner outside the agent, for benchmarks and demos.
//!
//! ```text
//! cargo run --release -p shoal-placement --example plan_bench -- \
//!     --nodes 1000 --shards 10000 --rf 3 --scenario add-node
//! ```
//!
//! It builds a cluster (nodes spread round-robin over `--regions` × `--zones` zones), places
//! the shards with the planner itself (not timed, except in `from-scratch`), applies the
//! scenario, then plans and applies until the plan is empty, timing every planning round.
//! It prints one JSON line. All inputs come from `--seed`; only the timings vary between runs.
//! With `PLAN_BENCH_VERBOSE=1` it also prints, on stderr, each round's moves by reason.

use std::time::Instant;

use shoal_placement::{
    ClusterState, Epoch, Key, KeyRange, Locality, Move, Node, NodeId, NodeStatus, Plan, Policy,
    Resources, Shard, ShardId, TableId, apply, plan,
};

/// Rounds after which a run is declared non-converging.
const ROUNDS_MAX: usize = 10_000;

struct Args {
    nodes: usize,
    shards: usize,
    rf: usize,
    scenario: String,
    regions: usize,
    zones: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nodes: 1000,
        shards: 10_000,
        rf: 3,
        scenario: "steady".into(),
        regions: 10,
        zones: 3,
        seed: 1,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("missing value after {flag}"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("bad value for {flag}: {e}"))
        };
        match flag.as_str() {
            "--nodes" => args.nodes = number()? as usize,
            "--shards" => args.shards = number()? as usize,
            "--rf" => args.rf = number()? as usize,
            "--regions" => args.regions = number()? as usize,
            "--zones" => args.zones = number()? as usize,
            "--seed" => args.seed = number()?,
            "--scenario" => args.scenario = value.clone(),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let known = [
        "steady",
        "add-node",
        "lose-node",
        "lose-zone",
        "skewed",
        "from-scratch",
    ];
    if !known.contains(&args.scenario.as_str()) {
        return Err(format!("unknown scenario {}", args.scenario));
    }
    Ok(args)
}

/// splitmix64: a tiny seeded generator for the fixtures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

fn make_node(index: usize, zones_per_region: usize, zone_count: usize) -> Node {
    let zone = index % zone_count;
    Node {
        id: NodeId(format!("n{index:05}")),
        locality: Locality {
            region: format!("r{:02}", zone / zones_per_region),
            zone: format!("z{}", zone % zones_per_region),
            rack: format!("k{}", (index / zone_count) % 4),
        },
        status: NodeStatus::Alive,
        capacity: Resources {
            disk_bytes: 1 << 44,
            cpu_millicores: 16_000,
            qps: 1_000_000,
        },
        usage: Resources::default(),
    }
}

fn make_cluster(args: &Args) -> ClusterState {
    let zone_count = args.regions * args.zones;
    let nodes = (0..args.nodes)
        .map(|i| make_node(i, args.zones, zone_count))
        .collect();
    let key = |i: usize| Key(format!("k{i:08}").into_bytes());
    let shards = (0..args.shards)
        .map(|i| Shard {
            id: ShardId(i as u64 + 1),
            table: TableId("t".into()),
            range: KeyRange {
                start: if i == 0 { Key::default() } else { key(i) },
                end: (i + 1 < args.shards).then(|| key(i + 1)),
            },
            size_bytes: 1 << 30,
            qps: 100,
            replicas: Vec::new(),
            primary: None,
            epoch: Epoch(0),
            reshaped_at_ms: None,
            samples: Vec::new(),
        })
        .collect();
    ClusterState {
        now_ms: 0,
        nodes,
        shards,
        in_flight: Vec::new(),
        history: Default::default(),
    }
}

struct Run {
    rounds: usize,
    moves: usize,
    actions: usize,
    first_ms: f64,
    max_ms: f64,
    total_ms: f64,
    infeasible: usize,
}

fn count_moves(plan: &Plan) -> usize {
    // A relocation is one move (its RemoveReplica is the second half).
    plan.moves
        .iter()
        .filter(|m| !matches!(m.action, Move::RemoveReplica { .. }))
        .count()
}

#[allow(clippy::disallowed_methods)] // Wall time is what this benchmark measures.
fn converge(state: &mut ClusterState, policy: &Policy) -> Run {
    let mut run = Run {
        rounds: 0,
        moves: 0,
        actions: 0,
        first_ms: 0.0,
        max_ms: 0.0,
        total_ms: 0.0,
        infeasible: 0,
    };
    loop {
        let started = Instant::now();
        let plan = plan(state, policy).expect("valid input");
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        if run.rounds == 0 {
            run.first_ms = elapsed_ms;
        }
        run.max_ms = run.max_ms.max(elapsed_ms);
        run.total_ms += elapsed_ms;
        run.infeasible = plan.infeasible.len();
        if plan.moves.is_empty() {
            return run;
        }
        run.rounds += 1;
        assert!(run.rounds <= ROUNDS_MAX, "no convergence");
        if std::env::var_os("PLAN_BENCH_VERBOSE").is_some() {
            let mut by_reason = std::collections::BTreeMap::new();
            for planned in &plan.moves {
                let kind = format!("{}", planned.reason);
                let kind = kind.split(' ').next().unwrap_or_default().to_string();
                *by_reason.entry(kind).or_insert(0usize) += 1;
            }
            eprintln!("round {}: {:?}", run.rounds, by_reason);
        }
        run.moves += count_moves(&plan);
        run.actions += plan.moves.len();
        state.history = plan.history.clone();
        for planned in &plan.moves {
            apply(state, &planned.action).expect("planned moves apply");
        }
        state.now_ms += 10_000;
    }
}

/// Per-node load in the planner's units (a mean shard weighs 1), over alive nodes.
fn loads(state: &ClusterState, policy: &Policy, primaries: bool) -> Vec<f64> {
    let count = state.shards.len().max(1) as f64;
    let mean_size = state
        .shards
        .iter()
        .map(|s| s.size_bytes as f64)
        .sum::<f64>()
        / count;
    let mean_qps = state.shards.iter().map(|s| s.qps as f64).sum::<f64>() / count;
    let share = policy.qps_weight_ratio;
    let mut by_node = std::collections::BTreeMap::new();
    for node in state.nodes.iter().filter(|n| n.status == NodeStatus::Alive) {
        by_node.insert(node.id.clone(), 0.0);
    }
    for shard in &state.shards {
        let weight = (1.0 - share) * shard.size_bytes as f64 / mean_size
            + share * shard.qps as f64 / mean_qps;
        let holders: Vec<&NodeId> = if primaries {
            shard.primary.iter().collect()
        } else {
            shard.replicas.iter().map(|r| &r.node).collect()
        };
        for node in holders {
            if let Some(load) = by_node.get_mut(node) {
                *load += weight;
            }
        }
    }
    by_node.into_values().collect()
}

fn max_over_mean(loads: &[f64]) -> f64 {
    let mean = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
    loads.iter().cloned().fold(0.0, f64::max) / mean
}

/// Moves that bring an empty node into the balance band, for unit-weight shards.
fn fill_minimum(total: f64, nodes: usize, policy: &Policy) -> usize {
    let mean = total / nodes as f64;
    let lower = (mean * (1.0 - policy.balance_band_ratio)).min(mean - policy.balance_band_abs);
    lower.max(0.0).ceil() as usize
}

/// A lower bound for rebalancing: every node outside the band needs at least one move, and
/// one move fixes at most one node on each side.
fn band_minimum(loads: &[f64], policy: &Policy) -> usize {
    let mean = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
    let over = loads
        .iter()
        .filter(|l| {
            **l > mean * (1.0 + policy.balance_band_ratio) && **l - mean > policy.balance_band_abs
        })
        .count();
    let under = loads
        .iter()
        .filter(|l| {
            **l < mean * (1.0 - policy.balance_band_ratio) && mean - **l > policy.balance_band_abs
        })
        .count();
    over.max(under)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("plan_bench: {message}");
            eprintln!(
                "usage: plan_bench --nodes N --shards S --rf R --scenario \
                 {{steady|add-node|lose-node|lose-zone|skewed|from-scratch}} \
                 [--regions 10] [--zones 3] [--seed 1]"
            );
            std::process::exit(2);
        }
    };
    let policy = Policy {
        replication_factor: args.rf,
        ..Policy::default()
    };
    let mut rng = Rng(args.seed);
    let mut state = make_cluster(&args);
    let zone_count = args.regions * args.zones;

    let (min_moves, run) = if args.scenario == "from-scratch" {
        let run = converge(&mut state, &policy);
        (args.shards * args.rf + args.shards, run)
    } else {
        converge(&mut state, &policy);
        let min_moves = match args.scenario.as_str() {
            "steady" => 0,
            "add-node" => {
                let node = make_node(args.nodes, args.zones, zone_count);
                state.nodes.push(node);
                let n = args.nodes + 1;
                fill_minimum((args.shards * args.rf) as f64, n, &policy)
                    + fill_minimum(args.shards as f64, n, &policy)
            }
            "lose-node" | "lose-zone" => {
                let lost_zone = (rng.next() % zone_count as u64) as usize;
                let victim = (rng.next() % args.nodes as u64) as usize;
                let lose_zone = args.scenario == "lose-zone";
                let mut lost = std::collections::BTreeSet::new();
                for (index, node) in state.nodes.iter_mut().enumerate() {
                    let hit = if lose_zone {
                        index % zone_count == lost_zone
                    } else {
                        index == victim
                    };
                    if hit {
                        node.status = NodeStatus::Dead;
                        lost.insert(node.id.clone());
                    }
                }
                state
                    .shards
                    .iter()
                    .map(|s| {
                        s.replicas.iter().filter(|r| lost.contains(&r.node)).count()
                            + usize::from(s.primary.as_ref().is_some_and(|p| lost.contains(p)))
                    })
                    .sum()
            }
            "skewed" => {
                // Pareto(alpha = 1.2) QPS, capped at 100x the scale.
                for shard in &mut state.shards {
                    let draw = 20.0 / rng.unit().powf(1.0 / 1.2);
                    shard.qps = draw.min(2000.0) as u64;
                }
                band_minimum(&loads(&state, &policy, false), &policy)
                    + band_minimum(&loads(&state, &policy, true), &policy)
            }
            _ => unreachable!("scenario checked in parse_args"),
        };
        (min_moves, converge(&mut state, &policy))
    };

    println!(
        "{{\"scenario\":\"{}\",\"nodes\":{},\"shards\":{},\"rf\":{},\"plan_ms\":{:.3},\
         \"plan_ms_max\":{:.3},\"plan_ms_total\":{:.3},\"rounds\":{},\"moves\":{},\"actions\":{},\
         \"min_moves\":{},\"max_over_mean\":{:.4},\"primary_max_over_mean\":{:.4},\
         \"infeasible\":{}}}",
        args.scenario,
        args.nodes,
        args.shards,
        args.rf,
        run.first_ms,
        run.max_ms,
        run.total_ms,
        run.rounds,
        run.moves,
        run.actions,
        min_moves,
        max_over_mean(&loads(&state, &policy, false)),
        max_over_mean(&loads(&state, &policy, true)),
        run.infeasible,
    );
}
