//! The membership core driven by a tiny deterministic network: a handful of
//! nodes, fixed latency, virtual time. The simulator does this at scale with
//! faults; these tests pin down the core's own rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use shoal_membership::codec::DropReason;
use shoal_membership::{
    Generation, Identity, MemberMeta, MemberState, Membership, MembershipConfig, NodeId, Role,
};

const LATENCY: Duration = Duration::from_millis(5);

fn identity(index: usize, generation: u64) -> Identity {
    let mut labels = BTreeMap::new();
    labels.insert("zone".to_string(), format!("z{}", index % 3));
    Identity {
        node_id: NodeId::new(format!("n{index}")).unwrap(),
        addr: SocketAddr::from(([127, 0, 0, 1], 7400 + index as u16)),
        generation: Generation(generation),
        rejoin: 0,
        meta: std::sync::Arc::new(MemberMeta {
            role: if index < 3 { Role::Seed } else { Role::Member },
            labels,
            version: "0.0.0".into(),
        }),
    }
}

/// Nodes exchanging datagrams with a fixed latency; `down` nodes neither
/// send nor receive; `stalled` nodes get no timer or datagram until resumed.
struct Net {
    nodes: BTreeMap<SocketAddr, Membership>,
    in_flight: BTreeMap<(Duration, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
    now: Duration,
    down: BTreeSet<SocketAddr>,
    /// Directed links that drop everything.
    blocked: BTreeSet<(SocketAddr, SocketAddr)>,
    trace: Vec<String>,
    /// Every stream message sent: when, by whom, its kind byte.
    streams: Vec<(Duration, SocketAddr, Option<u8>)>,
}

impl Net {
    fn new(n: usize, config: &MembershipConfig, seed: u64) -> Self {
        let mut net = Net {
            nodes: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            now: Duration::ZERO,
            down: BTreeSet::new(),
            blocked: BTreeSet::new(),
            trace: Vec::new(),
            streams: Vec::new(),
        };
        for index in 0..n {
            net.start(index, 1, config, seed);
        }
        net
    }

    fn start(&mut self, index: usize, generation: u64, config: &MembershipConfig, seed: u64) {
        let id = identity(index, generation);
        let mut core = Membership::new(id.clone(), config.clone(), seed + index as u64, self.now)
            .expect("valid config");
        for seed_index in 0..3 {
            let seed_id = identity(seed_index, 0);
            core.add_seed(self.now, seed_id.node_id, seed_id.addr);
        }
        self.down.remove(&id.addr);
        self.nodes.insert(id.addr, core);
        self.flush(id.addr);
    }

    fn flush(&mut self, from: SocketAddr) {
        let core = self.nodes.get_mut(&from).unwrap();
        while let Some(transmit) = core.poll_transmit() {
            self.seq += 1;
            self.trace.push(format!(
                "{:?} {from} -> {} {}",
                self.now,
                transmit.addr,
                transmit.payload.len()
            ));
            if !self.down.contains(&from) && !self.blocked.contains(&(from, transmit.addr)) {
                self.in_flight.insert(
                    (self.now + LATENCY, self.seq),
                    (from, transmit.addr, transmit.payload),
                );
            }
        }
        while let Some(event) = core.poll_event() {
            self.trace.push(format!("{:?} {from} {event:?}", self.now));
        }
        while let Some(stream) = core.poll_stream() {
            // Anti-entropy rides a reliable stream: model it as a datagram
            // tagged so delivery hands it to the telemetry store.
            self.seq += 1;
            self.streams
                .push((self.now, from, stream.payload.first().copied()));
            let mut payload = b"STREAM".to_vec();
            payload.extend_from_slice(&stream.payload);
            if !self.down.contains(&from) && !self.blocked.contains(&(from, stream.addr)) {
                self.in_flight
                    .insert((self.now + LATENCY, self.seq), (from, stream.addr, payload));
            }
        }
    }

    /// Advances virtual time to `until`, delivering datagrams and timers in
    /// time order.
    fn run_until(&mut self, until: Duration) {
        loop {
            let next_packet = self.in_flight.keys().next().map(|(at, _)| *at);
            let next_timer = self
                .nodes
                .iter()
                .filter(|(addr, _)| !self.down.contains(addr))
                .filter_map(|(addr, core)| core.poll_timeout().map(|at| (at, *addr)))
                .min();
            let next = match (next_packet, next_timer) {
                (Some(p), Some((t, _))) => p.min(t),
                (Some(p), None) => p,
                (None, Some((t, _))) => t,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = next;
            if next_packet == Some(next) {
                let (_, (from, to, payload)) = self.in_flight.pop_first().unwrap();
                let sender = self
                    .nodes
                    .get(&from)
                    .map(|core| core.identity().node_id.clone());
                if !self.down.contains(&to)
                    && let Some(core) = self.nodes.get_mut(&to)
                {
                    match payload.strip_prefix(b"STREAM") {
                        Some(stream) => core.handle_stream(self.now, &sender.unwrap(), stream),
                        None => core.handle_datagram(self.now, None, &payload),
                    }
                    self.flush(to);
                }
            } else {
                let (_, addr) = next_timer.unwrap();
                self.nodes.get_mut(&addr).unwrap().handle_timeout(self.now);
                self.flush(addr);
            }
        }
        self.now = until;
    }

    /// Runs until `condition` holds, at most `limit` of virtual time.
    fn run_until_true(&mut self, limit: Duration, condition: impl Fn(&Net) -> bool) -> bool {
        let deadline = self.now + limit;
        while self.now < deadline {
            if condition(self) {
                return true;
            }
            let step = self.now + Duration::from_millis(100);
            self.run_until(step);
        }
        condition(self)
    }

    fn view(&self, observer: SocketAddr) -> BTreeMap<String, (MemberState, u64)> {
        self.nodes[&observer]
            .members()
            .into_iter()
            .map(|row| {
                (
                    row.identity.node_id.to_string(),
                    (row.state, row.identity.generation.0),
                )
            })
            .collect()
    }

    fn live(&self) -> Vec<SocketAddr> {
        self.nodes
            .keys()
            .filter(|addr| !self.down.contains(addr))
            .copied()
            .collect()
    }

    /// Runs until every live node sees nodes `0..n` alive, at most `limit`.
    fn until_all_alive(&mut self, n: usize, limit: Duration) -> bool {
        self.run_until_true(limit, |net| {
            (0..n).all(|node| net.all_see(node, MemberState::Alive, None))
        })
    }

    /// Runs until every live node sees `node` in `state` (at `generation`,
    /// if given), at most `limit`.
    fn until_all_see(
        &mut self,
        node: usize,
        state: MemberState,
        generation: Option<u64>,
        limit: Duration,
    ) -> bool {
        self.run_until_true(limit, |net| net.all_see(node, state, generation))
    }

    fn all_see(&self, node: usize, state: MemberState, generation: Option<u64>) -> bool {
        let name = format!("n{node}");
        self.live().into_iter().all(|observer| {
            self.view(observer)
                .get(&name)
                .is_some_and(|(seen, seen_generation)| {
                    *seen == state && generation.is_none_or(|g| g == *seen_generation)
                })
        })
    }
}

fn addr(index: usize) -> SocketAddr {
    identity(index, 0).addr
}

#[test]
fn five_nodes_find_each_other_through_seeds() {
    let config = MembershipConfig::new("test");
    let mut net = Net::new(5, &config, 7);
    let converged = net.run_until_true(Duration::from_secs(10), |net| {
        (0..5).all(|node| net.all_see(node, MemberState::Alive, Some(1)))
    });
    assert!(converged, "views: {:?}", net.view(addr(4)));
    // Metadata travels with the identity.
    let row = net.nodes[&addr(4)]
        .members()
        .into_iter()
        .find(|row| row.identity.node_id.as_str() == "n0")
        .unwrap();
    assert_eq!(row.identity.meta.role, Role::Seed);
    assert_eq!(row.identity.meta.labels["zone"], "z0");
    assert!(row.last_heard.is_some());
}

#[test]
fn a_crashed_node_is_declared_down_and_its_restart_wins() {
    let config = MembershipConfig::new("test");
    let mut net = Net::new(5, &config, 11);
    assert!(net.until_all_alive(5, Duration::from_secs(10)));
    net.down.insert(addr(3));
    assert!(
        net.until_all_see(3, MemberState::Down, Some(1), Duration::from_secs(30)),
        "view of n0: {:?}",
        net.view(addr(0))
    );
    net.start(3, 2, &config, 99);
    assert!(
        net.until_all_see(3, MemberState::Alive, Some(2), Duration::from_secs(10)),
        "view of n0: {:?}",
        net.view(addr(0))
    );
    // The old generation is gone from every table, not listed beside the new
    // (the restarted node's own table included, even once gossip about its
    // old generation reaches it).
    net.run_until(net.now + Duration::from_secs(10));
    for observer in net.live() {
        let rows = net.nodes[&observer].members();
        assert_eq!(
            rows.iter()
                .filter(|row| row.identity.node_id.as_str() == "n3")
                .count(),
            1
        );
    }
}

/// In a small cluster a node probes a suspect again (suspects stay in the
/// probe rotation) well before its suspicion runs out; failing again must
/// not restart the suspicion, or a crashed node is never declared down.
#[test]
fn a_crash_in_a_three_node_cluster_is_declared_down() {
    let config = MembershipConfig::new("test");
    let mut net = Net::new(3, &config, 5);
    assert!(net.until_all_alive(3, Duration::from_secs(10)));
    net.down.insert(addr(2));
    assert!(
        net.until_all_see(2, MemberState::Down, Some(1), Duration::from_secs(20)),
        "views: {:?} {:?}",
        net.view(addr(0)),
        net.view(addr(1))
    );
}

#[test]
fn same_seed_same_history_other_seed_other_history() {
    let config = MembershipConfig::new("test");
    let run = |seed| {
        let mut net = Net::new(5, &config, seed);
        net.run_until(Duration::from_secs(5));
        net.down.insert(addr(2));
        net.run_until(Duration::from_secs(20));
        net.trace
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

#[test]
fn foreign_and_garbage_packets_are_counted_and_change_nothing() {
    let config = MembershipConfig::new("test");
    let mut net = Net::new(3, &config, 5);
    assert!(net.until_all_alive(3, Duration::from_secs(10)));
    let before = net.view(addr(0));
    // A datagram of another cluster: the same bytes a real member would send.
    let mut stranger =
        Membership::new(identity(9, 1), MembershipConfig::new("other"), 1, net.now).unwrap();
    stranger.add_seed(net.now, identity(0, 0).node_id, addr(0));
    let foreign = stranger.poll_transmit().expect("an announce").payload;
    let now = net.now;
    let core = net.nodes.get_mut(&addr(0)).unwrap();
    core.handle_datagram(now, None, &foreign);
    core.handle_datagram(now, None, b"garbage");
    core.handle_datagram(now, None, &vec![0u8; 4000]);
    let mut bad_version = foreign.clone();
    bad_version[3] = 99;
    core.handle_datagram(now, None, &bad_version);
    // Our envelope around garbage: foca refuses it.
    let mut inner_garbage = b"SHL\x01\x04test".to_vec();
    inner_garbage.extend_from_slice(&[0xc1; 40]);
    core.handle_datagram(now, None, &inner_garbage);
    // A real member's packet, but arriving over n2's authenticated connection.
    let mut n1 = Membership::new(identity(1, 5), MembershipConfig::new("test"), 1, now).unwrap();
    n1.add_seed(now, identity(0, 0).node_id, addr(0));
    let spoofed = n1.poll_transmit().expect("an announce").payload;
    core.handle_datagram(now, Some(&identity(2, 0).node_id), &spoofed);
    let drops = &core.stats().drops;
    assert_eq!(drops.get(&DropReason::Impersonation), Some(&1), "{drops:?}");
    assert_eq!(drops.get(&DropReason::ForeignCluster), Some(&1));
    assert_eq!(drops.get(&DropReason::Malformed), Some(&1));
    assert_eq!(drops.get(&DropReason::TooBig), Some(&1));
    assert_eq!(drops.get(&DropReason::Version), Some(&1));
    assert_eq!(drops.get(&DropReason::Decode), Some(&1));
    assert_eq!(
        net.view(addr(0)),
        before,
        "n1 generation 5 must not replace generation 1"
    );
    assert!(!net.view(addr(0)).contains_key("n9"));
}

#[test]
fn late_timers_raise_local_health_and_answered_probes_lower_it() {
    let config = MembershipConfig::new("test");
    let mut net = Net::new(3, &config, 21);
    net.run_until(Duration::from_secs(5));
    assert_eq!(net.nodes[&addr(1)].local_health(), 0);
    // Stall node 1 for 3 s: its timers come due while it sleeps.
    net.down.insert(addr(1));
    net.run_until(Duration::from_secs(8));
    net.down.remove(&addr(1));
    let now = net.now;
    net.nodes.get_mut(&addr(1)).unwrap().handle_timeout(now);
    let raised = net.nodes[&addr(1)].local_health();
    assert!(raised >= 1, "health {raised}");
    assert!(net.nodes[&addr(1)].stats().timers_late >= 1);
    // Healthy again: acked probes bring the score back down.
    assert!(net.run_until_true(
        Duration::from_secs(60),
        |net| net.nodes[&addr(1)].local_health() == 0
    ));
}

#[test]
fn without_lifeguard_health_stays_zero() {
    let config = MembershipConfig {
        lifeguard: false,
        ..MembershipConfig::new("test")
    };
    let mut net = Net::new(3, &config, 21);
    net.run_until(Duration::from_secs(5));
    net.down.insert(addr(1));
    net.run_until(Duration::from_secs(8));
    net.down.remove(&addr(1));
    let now = net.now;
    net.nodes.get_mut(&addr(1)).unwrap().handle_timeout(now);
    assert_eq!(net.nodes[&addr(1)].local_health(), 0);
    assert!(net.nodes[&addr(1)].stats().timers_late >= 1);
}

#[test]
fn a_partition_heals_by_itself() {
    let config = MembershipConfig::new("test");
    let mut net = Net::new(5, &config, 8);
    assert!(net.until_all_alive(5, Duration::from_secs(10)));
    // Cut {3, 4} off from {0, 1, 2} for a minute, both ways.
    for a in 0..3 {
        for b in 3..5 {
            net.blocked.insert((addr(a), addr(b)));
            net.blocked.insert((addr(b), addr(a)));
        }
    }
    net.run_until(net.now + Duration::from_secs(60));
    net.blocked.clear();
    assert_eq!(net.view(addr(0))["n3"].0, MemberState::Down);
    assert_eq!(net.view(addr(3))["n0"].0, MemberState::Down);
    assert!(
        net.until_all_alive(5, Duration::from_secs(30)),
        "views: {:?}",
        (0..5).map(|i| net.view(addr(i))).collect::<Vec<_>>()
    );
}

#[test]
fn config_errors_name_the_field() {
    let config = MembershipConfig {
        probe_timeout: Duration::from_secs(5),
        ..MembershipConfig::new("t")
    };
    assert_eq!(config.validate().unwrap_err().field, "probe_timeout");
    let config = MembershipConfig::new("");
    assert_eq!(config.validate().unwrap_err().field, "cluster_name");
    let config = MembershipConfig {
        max_transmissions: Some(0),
        ..MembershipConfig::new("t")
    };
    assert_eq!(config.validate().unwrap_err().field, "max_transmissions");
    let config = MembershipConfig {
        relay_transmissions: Some(0),
        ..MembershipConfig::new("t")
    };
    assert_eq!(config.validate().unwrap_err().field, "relay_transmissions");
}

/// Telemetry relays are sent as often as updates, but at most 10 times by
/// default, or at most as often as configured; the foca baseline relays as
/// often as it sends updates, whatever that is set to.
#[test]
fn relays_are_sent_at_most_ten_times_by_default() {
    let config = MembershipConfig::new("t");
    let counts: Vec<u8> = [1, 10, 1_000, 10_000]
        .iter()
        .map(|&n| config.relay_transmissions(n).get())
        .collect();
    assert_eq!(counts, [10, 10, 10, 10]);
    let few = MembershipConfig {
        max_transmissions: Some(4),
        ..config.clone()
    };
    assert_eq!(few.relay_transmissions(1_000).get(), 4);
    let capped = MembershipConfig {
        relay_transmissions: Some(3),
        ..config.clone()
    };
    assert_eq!(capped.relay_transmissions(1_000).get(), 3);
    let raised = MembershipConfig {
        relay_transmissions: Some(14),
        ..config
    };
    let relays: Vec<u8> = [1, 10, 1_000]
        .iter()
        .map(|&n| raised.relay_transmissions(n).get())
        .collect();
    assert_eq!(relays, [10, 12, 14]);
    for max_transmissions in [None, Some(30)] {
        let baseline = MembershipConfig {
            max_transmissions,
            ..MembershipConfig::foca_lan_baseline("t", 1_000)
        };
        assert_eq!(
            baseline.relay_transmissions(1_000),
            baseline.transmissions(1_000)
        );
    }
}

/// Updates are sent 4 times per decimal digit of the cluster size, plus 4
/// (so each update misses about the same small number of members at any
/// size), at least 10 times, unless the count is fixed.
#[test]
fn transmissions_grow_with_the_digits_of_the_cluster_size() {
    let config = MembershipConfig::new("t");
    let counts: Vec<u8> = [1, 9, 10, 99, 100, 999, 1_000, 9_999, 10_000]
        .iter()
        .map(|&n| config.transmissions(n).get())
        .collect();
    assert_eq!(counts, [10, 10, 12, 12, 16, 16, 20, 20, 24]);
    let fixed = MembershipConfig {
        max_transmissions: Some(7),
        ..config
    };
    assert_eq!(fixed.transmissions(1_000).get(), 7);
}

#[test]
fn newer_generation_wins_address_conflicts() {
    use foca::Identity as _;
    let old = identity(1, 1);
    let new = identity(1, 2);
    assert!(new.win_addr_conflict(&old));
    assert!(!old.win_addr_conflict(&new));
    let renewed = old.renew().unwrap();
    assert!(renewed.win_addr_conflict(&old));
    assert!(
        new.win_addr_conflict(&renewed),
        "a restart beats any rejoin of the old run"
    );
}

#[test]
fn telemetry_reaches_every_node_and_a_removed_node_is_forgotten() {
    use shoal_membership::telemetry::DatabaseReport;
    let config = MembershipConfig::new("test");
    let mut net = Net::new(5, &config, 31);
    assert!(net.until_all_alive(5, Duration::from_secs(10)));
    let report: DatabaseReport = serde_json::from_str(
        r#"{"qps": 1234.5, "latency_p50_us": 300, "latency_p99_us": 900, "replication_lag_ms": 7}"#,
    )
    .unwrap();
    let now = net.now;
    net.nodes
        .get_mut(&addr(2))
        .unwrap()
        .set_database_report(now, report)
        .unwrap();
    let n2 = identity(2, 1).node_id;
    let qps_seen = |net: &Net, observer: usize| {
        net.nodes[&addr(observer)].with_telemetry(|store| {
            store
                .record(&n2)
                .and_then(|record| record.database.as_ref().map(|db| db.report.qps))
        })
    };
    assert!(
        net.run_until_true(Duration::from_secs(10), |net| (0..5).all(|o| qps_seen(
            net, o
        ) == Some(
            1234.5
        ))),
        "telemetry did not converge"
    );
    // Every node comes to hold every node's record (quiet nodes' records
    // arrive when they join, or by anti-entropy).
    assert!(net.run_until_true(Duration::from_secs(30), |net| {
        (0..5).all(|observer| {
            net.nodes[&addr(observer)].with_telemetry(|store| store.map().len()) == 5
        })
    }));
    // The catalog removes n2 (generation 1): its record disappears everywhere
    // and does not come back while n2 keeps running.
    let now = net.now;
    net.nodes
        .get_mut(&addr(0))
        .unwrap()
        .remove_telemetry(now, &n2, Generation(1));
    net.flush(addr(0));
    let gone = |net: &Net| {
        (0..5)
            .filter(|o| *o != 2)
            .all(|o| qps_seen(net, o).is_none())
    };
    assert!(
        net.run_until_true(Duration::from_secs(10), gone),
        "tombstone did not spread"
    );
    net.run_until(net.now + Duration::from_secs(30));
    assert!(gone(&net), "a removed record came back");
}

#[test]
fn a_restarted_node_learns_every_member_at_once_by_push_pull() {
    let config = MembershipConfig::new("test");
    let mut net = Net::new(24, &config, 41);
    assert!(net.until_all_alive(24, Duration::from_secs(30)));
    net.down.insert(addr(20));
    net.run_until(net.now + Duration::from_millis(500));
    net.start(20, 2, &config, 77);
    // One round trip to a seed brings the whole table, not one packet's worth.
    let restarted = net.now;
    assert!(
        net.run_until_true(Duration::from_secs(2), |net| {
            let view = net.view(addr(20));
            view.len() == 24 && view.values().all(|(state, _)| *state == MemberState::Alive)
        }),
        "view of the restarted node: {:?}",
        net.view(addr(20))
    );
    assert!(net.now - restarted <= Duration::from_secs(2));
    assert!(net.nodes[&addr(20)].stats().push_pulls >= 1);
}

/// The periodic push-pull first compares 64-bit summaries of the two member
/// tables: a settled cluster swaps no tables, a summary that differs is
/// answered with a whole table (and that with the other's), and a malformed
/// summary is counted and answered with nothing.
/// A member compares tables with a random member soon after it starts,
/// then less and less often: 2, 6, 14 and 30 s after the start (the
/// interval doubles up to `push_pull_period`), then every 30 s. Members
/// that start together (a cluster's boot) learn each other from these
/// exchanges within seconds; gossip alone, carrying n joins to n members,
/// took tens of seconds at 1,000 agents in the simulator.
#[test]
fn push_pulls_come_early_after_the_start_then_every_period() {
    let config = MembershipConfig::new("test");
    let mut net = Net::new(2, &config, 3);
    net.run_until(Duration::from_secs(61));
    // The periodic push-pull opens with a summary (kind 4); the tables
    // swapped at the start, with the seed, are pushes (kind 2).
    let summaries: Vec<u64> = net
        .streams
        .iter()
        .filter(|(_, from, kind)| *from == addr(1) && *kind == Some(4))
        .map(|(at, _, _)| at.as_secs())
        .collect();
    assert_eq!(summaries, [2, 6, 14, 30, 60]);
}

#[test]
fn push_pull_swaps_whole_tables_only_when_summaries_differ() {
    let mut config = MembershipConfig::new("test");
    config.push_pull_period = Duration::from_secs(5);
    let mut net = Net::new(8, &config, 5);
    assert!(net.until_all_alive(8, Duration::from_secs(30)));
    let totals = |net: &Net| {
        net.nodes
            .values()
            .fold((0, 0, 0), |(full, in_sync, dropped), core| {
                let stats = core.stats();
                (
                    full + stats.push_pulls,
                    in_sync + stats.push_pulls_in_sync,
                    dropped + stats.streams_dropped,
                )
            })
    };
    let (full, in_sync, dropped) = totals(&net);
    net.run_until(net.now + Duration::from_secs(30));
    let (full_later, in_sync_later, dropped_later) = totals(&net);
    assert_eq!(full_later, full, "a settled cluster swaps no tables");
    assert!(
        in_sync_later >= in_sync + 8 * 5,
        "every node compared summaries every 5 s: {in_sync} -> {in_sync_later}"
    );
    assert_eq!(dropped_later, dropped);

    // A summary that differs (kind 4, then 8 bytes): node 0 pushes its whole
    // table to node 1, which merges it and answers with its own.
    let from = identity(1, 0).node_id;
    let now = net.now;
    let before = (
        net.nodes[&addr(0)].stats().push_pulls,
        net.nodes[&addr(1)].stats().push_pulls,
    );
    let core = net.nodes.get_mut(&addr(0)).unwrap();
    core.handle_stream(now, &from, &[4, 0, 0, 0, 0, 0, 0, 0, 0]);
    net.flush(addr(0));
    net.run_until(net.now + Duration::from_millis(100));
    assert_eq!(net.nodes[&addr(1)].stats().push_pulls, before.1 + 1);
    assert_eq!(net.nodes[&addr(0)].stats().push_pulls, before.0 + 1);

    // A malformed summary is counted and answered with nothing.
    let core = net.nodes.get_mut(&addr(0)).unwrap();
    core.handle_stream(net.now, &from, &[4, 1, 2, 3]);
    assert_eq!(core.stats().streams_dropped, dropped_later + 1);
    assert!(core.poll_stream().is_none());
}

/// An agent's telemetry lists as unreachable only the peers its own probes
/// failed to reach — independent evidence for the controllers, and a record
/// that changes at a few agents, not at all of them, when a node dies. A
/// crashed node is listed by some agent; not by one that joined after the
/// crash (it only heard the verdict); and by none once it restarts.
#[test]
fn telemetry_lists_only_peers_this_agent_failed_to_reach() {
    let config = MembershipConfig::new("test");
    let mut net = Net::new(6, &config, 41);
    assert!(net.until_all_alive(6, Duration::from_secs(10)));
    let n3 = identity(3, 1).node_id;
    let lists_n3 = |net: &Net, observer: usize| {
        let me = identity(observer, 1).node_id;
        net.nodes[&addr(observer)].with_telemetry(|store| {
            store
                .record(&me)
                .is_some_and(|record| record.unreachable_peers.contains(&n3))
        })
    };
    net.down.insert(addr(3));
    assert!(net.until_all_see(3, MemberState::Down, Some(1), Duration::from_secs(30)));
    assert!(
        net.run_until_true(Duration::from_secs(10), |net| {
            [0, 1, 2, 4, 5].iter().any(|&o| lists_n3(net, o))
        }),
        "no agent reports the crashed node unreachable"
    );

    net.start(6, 1, &config, 41);
    assert!(net.run_until_true(Duration::from_secs(30), |net| {
        net.view(addr(6)).get("n3") == Some(&(MemberState::Down, 1))
    }));
    // Several refreshes later, the newcomer still does not list it.
    net.run_until(net.now + Duration::from_secs(10));
    assert!(net.nodes[&addr(6)].with_telemetry(|store| {
        store
            .record(&identity(6, 1).node_id)
            .is_some_and(|record| record.unreachable_peers.is_empty())
    }));

    net.start(3, 2, &config, 43);
    assert!(net.until_all_see(3, MemberState::Alive, Some(2), Duration::from_secs(10)));
    assert!(
        net.run_until_true(Duration::from_secs(10), |net| {
            [0, 1, 2, 4, 5, 6].iter().all(|&o| !lists_n3(net, o))
        }),
        "a restarted node is still reported unreachable"
    );
}
