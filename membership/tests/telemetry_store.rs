//! Example-based tests of the telemetry store at the crate's public
//! boundary: the local update → delta → receive → merge flow, anti-entropy
//! rounds, removal, limits and the JSON forms.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_membership::telemetry::{
    AntiEntropyMessage, DatabaseReport, DatabaseSnapshot, Delta, DeltaSource, Digest,
    EncodedRecord, HostMetrics, NodeRecord, RecordBatch, RecordMerge, Sequence, ShardId,
    ShardReport, ShardRole, TelemetryAction, TelemetryConfig, TelemetryError, TelemetryKey,
    TelemetryKeyKind, TelemetryStore, Tombstone, wire,
};
use shoal_membership::{Generation, NodeId};

/// A one-line change to a valid value, for table-driven validation tests.
type Mutation<T> = fn(&mut T);

fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn store(name: &str, generation: u64) -> TelemetryStore {
    TelemetryStore::new(
        TelemetryConfig::default(),
        id(name),
        Generation(generation),
        "0.0.0 (test)",
        secs(0),
    )
    .unwrap()
}

fn host(cpu_percent: f64) -> HostMetrics {
    HostMetrics {
        cpu_percent,
        memory_used_bytes: 1 << 30,
        memory_total_bytes: 4 << 30,
        disk_used_bytes: 10 << 30,
        disk_capacity_bytes: 100 << 30,
    }
}

fn report() -> DatabaseReport {
    DatabaseReport {
        qps: 1200.5,
        latency_p50_us: 800,
        latency_p99_us: 4200,
        replication_lag_ms: 12,
        shards: BTreeMap::from([(
            ShardId(17),
            ShardReport {
                size_bytes: 1 << 20,
                qps: 300.0,
                applied_position: shoal_membership::telemetry::AppliedPosition(99812),
                role: ShardRole::Primary,
                epoch: shoal_membership::telemetry::Epoch(4),
            },
        )]),
        schema_versions: BTreeMap::from([(
            "orders".to_owned(),
            shoal_membership::telemetry::SchemaVersion(7),
        )]),
    }
}

fn report_with_shards(n_shards: u64) -> DatabaseReport {
    let mut report = report();
    for shard in 0..n_shards {
        report
            .shards
            .insert(ShardId(shard), report.shards[&ShardId(17)].clone());
    }
    report
}

/// Refreshes `store` at `now` and returns the delta foca would broadcast.
fn refresh_delta(store: &mut TelemetryStore, now: Duration) -> Vec<u8> {
    store.refresh(now).unwrap();
    let delta = store.local_delta(now).unwrap();
    // What foca does with `add_broadcast`: ask the handler, sender None.
    let key = store
        .receive_delta(now, &delta.bytes, DeltaSource::Local)
        .unwrap();
    assert_eq!(key, Some(delta.key.clone()));
    delta.bytes
}

#[test]
fn delta_flow_local_update_to_peer_merge() {
    let mut a = store("a", 1);
    let mut b = store("b", 1);
    a.set_host_metrics(host(42.0)).unwrap();
    a.set_database_report(secs(0), report()).unwrap();
    let bytes = refresh_delta(&mut a, secs(1));
    assert_eq!(
        a.counters().stale_received,
        0,
        "our own add_broadcast is not news"
    );

    let key = b.receive_delta(secs(2), &bytes, DeltaSource::Peer).unwrap();
    assert_eq!(
        key.map(|key| key.kind),
        Some(TelemetryKeyKind::Record(a.local_version().unwrap()))
    );
    assert_eq!(b.record(&id("a")), a.record(&id("a")));
    assert_eq!(b.meta(&id("a")).unwrap().updated_at, secs(2));
    assert_eq!(b.counters().versions_received, 1);

    // The same delta again is no news: foca must stop spreading it.
    assert_eq!(
        b.receive_delta(secs(3), &bytes, DeltaSource::Peer).unwrap(),
        None
    );
    assert_eq!(b.counters().stale_received, 1);
    // Age grows until a newer version arrives.
    let ages: BTreeMap<_, _> = b.ages(secs(10)).collect();
    assert_eq!(ages[&id("a")], secs(8));
}

#[test]
fn newer_version_replaces_older_and_older_is_stale() {
    let mut a = store("a", 1);
    let mut b = store("b", 1);
    let first = refresh_delta(&mut a, secs(1));
    let second = refresh_delta(&mut a, secs(3));
    assert!(
        b.receive_delta(secs(4), &second, DeltaSource::Peer)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        b.receive_delta(secs(5), &first, DeltaSource::Peer).unwrap(),
        None
    );
    assert_eq!(b.record(&id("a")).unwrap().version.sequence.0, 2);
    assert_eq!(b.counters().merge_conflicts_resolved, 1);
}

#[test]
fn handle_timeout_refreshes_and_schedules_anti_entropy() {
    let mut a = store("a", 1);
    assert_eq!(a.poll_timeout(), secs(0));
    let actions = a.handle_timeout(secs(0));
    assert!(matches!(
        actions.as_slice(),
        [TelemetryAction::Broadcast(_)]
    ));
    assert_eq!(a.poll_timeout(), secs(2));
    // Nothing changed: no new version, but the anti-entropy round is due.
    let actions = a.handle_timeout(secs(10));
    assert!(matches!(
        actions.as_slice(),
        [TelemetryAction::StartAntiEntropy]
    ));
    assert_eq!(a.local_version().unwrap().sequence.0, 1);
    // Once the heartbeat is due, a new version is written; it is not
    // broadcast (anti-entropy carries it).
    let actions = a.handle_timeout(secs(30));
    assert!(matches!(
        actions.as_slice(),
        [TelemetryAction::StartAntiEntropy]
    ));
    assert_eq!(a.local_version().unwrap().sequence.0, 2);
}

/// After a join, anti-entropy rounds come 2 s later, then at doubling
/// intervals until they reach the configured 10 s.
#[test]
fn a_join_brings_anti_entropy_forward_then_ramps_up() {
    let mut a = store("a", 1);
    a.handle_timeout(secs(0));
    a.anti_entropy_soon(secs(1), secs(2));
    let mut rounds = Vec::new();
    while a.poll_timeout() <= secs(40) {
        let now = a.poll_timeout();
        let actions = a.handle_timeout(now);
        if actions
            .iter()
            .any(|action| matches!(action, TelemetryAction::StartAntiEntropy))
        {
            rounds.push(now.as_secs());
        }
    }
    assert_eq!(rounds, [3, 7, 15, 25, 35]);
}

#[test]
fn anti_entropy_round_converges_both_sides() {
    let mut a = store("a", 1);
    let mut b = store("b", 1);
    a.refresh(secs(1)).unwrap();
    b.refresh(secs(1)).unwrap();
    b.remove_node(secs(1), &id("gone"), Generation(3)).unwrap();

    // a opens with its summary; b's differs, so b sends its digest, a
    // answers with what b lacks and which records it wants, and b pushes
    // those.
    let summary = a.start_anti_entropy(secs(2)).unwrap();
    // A few bytes, whatever the map holds (a digest is ≈ 12 bytes a node).
    assert!(summary.len() <= 32, "summary of {} bytes", summary.len());
    let request = b
        .handle_anti_entropy(secs(2), &summary)
        .unwrap()
        .expect("request");
    assert!(matches!(
        wire::decode_anti_entropy(&request, usize::MAX).unwrap(),
        AntiEntropyMessage::Request { .. }
    ));
    let reply = a
        .handle_anti_entropy(secs(2), &request)
        .unwrap()
        .expect("reply");
    match wire::decode_anti_entropy(&reply, usize::MAX).unwrap() {
        AntiEntropyMessage::Reply { batch, wants } => {
            assert_eq!(batch.records.len(), 1, "b lacks a's record");
            assert_eq!(wants, [id("b")]);
        }
        other => panic!("expected a reply, got {other:?}"),
    }
    let push = b
        .handle_anti_entropy(secs(3), &reply)
        .unwrap()
        .expect("push");
    assert!(a.handle_anti_entropy(secs(3), &push).unwrap().is_none());

    assert_eq!(a.map(), b.map());
    assert_eq!(a.map().len(), 2);
    assert_eq!(a.map().tombstone(&id("gone")), Some(Generation(3)));
    // A second round ends at the summary, from either side.
    assert_eq!(b.counters().anti_entropy_in_sync, 0);
    let summary = a.start_anti_entropy(secs(4)).unwrap();
    assert!(b.handle_anti_entropy(secs(4), &summary).unwrap().is_none());
    assert_eq!(b.counters().anti_entropy_in_sync, 1);
    let summary = b.start_anti_entropy(secs(4)).unwrap();
    assert!(a.handle_anti_entropy(secs(4), &summary).unwrap().is_none());
    assert_eq!(a.counters().anti_entropy_in_sync, 1);
    // The full exchange, asked for, has nothing to send either way: no
    // reply at all.
    let request = a.anti_entropy_request(secs(4)).unwrap();
    assert!(b.handle_anti_entropy(secs(4), &request).unwrap().is_none());
}

/// One whole exchange that `opener` opens: summary, request, reply, push.
/// Returns the ids the reply asked for and the push that answered it.
fn exchange(
    opener: &mut TelemetryStore,
    peer: &mut TelemetryStore,
    now: Duration,
) -> (Vec<NodeId>, Option<RecordBatch>) {
    let summary = opener.start_anti_entropy(now).unwrap();
    let Some(request) = peer.handle_anti_entropy(now, &summary).unwrap() else {
        return (Vec::new(), None);
    };
    let Some(reply) = opener.handle_anti_entropy(now, &request).unwrap() else {
        return (Vec::new(), None);
    };
    let AntiEntropyMessage::Reply { wants, .. } =
        wire::decode_anti_entropy(&reply, usize::MAX).unwrap()
    else {
        panic!("expected a reply");
    };
    let Some(push) = peer.handle_anti_entropy(now, &reply).unwrap() else {
        return (wants, None);
    };
    assert!(opener.handle_anti_entropy(now, &push).unwrap().is_none());
    let AntiEntropyMessage::Push { batch } = wire::decode_anti_entropy(&push, usize::MAX).unwrap()
    else {
        panic!("expected a push");
    };
    (wants, Some(batch))
}

/// A store holding a small record of each of `names`.
fn source_holding(names: &[&str]) -> TelemetryStore {
    let mut source = store("src", 1);
    for name in names {
        source
            .merge_record(secs(1), record_of(name, 1, 1, 10.0))
            .unwrap();
    }
    source
}

/// A record of `name` over 300 bytes (it reports 20 shards).
fn big_record(name: &str) -> NodeRecord {
    let mut big = store(name, 1);
    big.set_database_report(secs(0), report_with_shards(20))
        .unwrap();
    big.refresh(secs(1)).unwrap();
    big.record(&id(name)).unwrap().clone()
}

/// A store that refuses records over 300 bytes and asks for at most
/// `records_max` in one reply.
fn store_of_small_records(name: &str, records_max: usize) -> TelemetryStore {
    let config = TelemetryConfig {
        delta_bytes_max: 200,
        record_bytes_max: 300,
        anti_entropy_bytes_max: 300,
        anti_entropy_records_max: records_max,
        ..TelemetryConfig::default()
    };
    TelemetryStore::new(config, id(name), Generation(1), "v", secs(0)).unwrap()
}

#[test]
fn anti_entropy_wants_rotate_past_records_refused_here() {
    // The source holds n1 and n2, too large for the sink, then n3 to n5,
    // and a newer n6 than the sink's.
    let mut source = source_holding(&["n3", "n4", "n5"]);
    for name in ["n1", "n2"] {
        source.merge_record(secs(1), big_record(name)).unwrap();
    }
    source
        .merge_record(secs(1), record_of("n6", 1, 2, 10.0))
        .unwrap();
    let mut sink = store_of_small_records("sink", 2);
    sink.merge_record(secs(1), record_of("n6", 1, 1, 10.0))
        .unwrap();
    // Asking for the first two wanted every time would ask for n1 and n2
    // forever; each reply asks from after where the last one stopped, and
    // records not held do not go before the newer n6.
    let asked: Vec<Vec<NodeId>> = (0..3)
        .map(|_| exchange(&mut sink, &mut source, secs(2)).0)
        .collect();
    assert_eq!(
        asked,
        [
            vec![id("n1"), id("n2")],
            vec![id("n3"), id("n4")],
            vec![id("n5"), id("n6")]
        ]
    );
    let held: Vec<(&str, u64)> = sink
        .map()
        .records()
        .map(|record| (record.node_id.as_str(), record.version.sequence.0))
        .collect();
    assert_eq!(held, [("n3", 1), ("n4", 1), ("n5", 1), ("n6", 2)]);
}

#[test]
fn anti_entropy_wants_follow_a_push_cut_short() {
    let big = big_record("n1");
    let size = |record: &NodeRecord| EncodedRecord::encode(record).size_bytes();
    let small_bytes = size(&record_of("n2", 1, 1, 10.0));
    // The source's batches carry n1 alone, or n2 and n3 together.
    let budget = 64 + size(&big) + small_bytes - 1;
    let source_config = TelemetryConfig {
        delta_bytes_max: 200,
        record_bytes_max: budget,
        anti_entropy_bytes_max: budget,
        ..TelemetryConfig::default()
    };
    let mut source =
        TelemetryStore::new(source_config, id("src"), Generation(1), "v", secs(0)).unwrap();
    source.merge_record(secs(1), big).unwrap();
    for name in ["n2", "n3"] {
        source
            .merge_record(secs(1), record_of(name, 1, 1, 10.0))
            .unwrap();
    }
    // The sink refuses n1 (too large), which the source's push cut short
    // after: the next reply asks from after it.
    let mut sink = store_of_small_records("sink", 512);
    assert_eq!(
        exchange(&mut sink, &mut source, secs(2)).0,
        [id("n1"), id("n2"), id("n3")]
    );
    assert!(sink.map().is_empty());
    assert_eq!(
        exchange(&mut sink, &mut source, secs(3)).0,
        [id("n2"), id("n3"), id("n1")]
    );
    let held: Vec<&str> = sink
        .map()
        .records()
        .map(|record| record.node_id.as_str())
        .collect();
    assert_eq!(held, ["n2", "n3"]);
}

#[test]
fn anti_entropy_wants_cursor_moves_only_for_a_push_asked_for() {
    let mut source = source_holding(&["n1", "n2", "n3"]);
    let mut sink = store("sink", 1);
    // A truncated push nobody asked for (n2's record) is merged, and moves
    // nothing: the next reply still asks in node order.
    let unasked = AntiEntropyMessage::Push {
        batch: RecordBatch {
            records: vec![EncodedRecord::encode(&record_of("n2", 1, 1, 10.0))],
            truncated: true,
            ..RecordBatch::default()
        },
    };
    let bytes = wire::encode_anti_entropy(&unasked, usize::MAX).unwrap();
    assert!(sink.handle_anti_entropy(secs(2), &bytes).unwrap().is_none());
    assert!(sink.record(&id("n2")).is_some());
    assert_eq!(
        exchange(&mut sink, &mut source, secs(3)).0,
        [id("n1"), id("n3")]
    );
}

#[test]
fn anti_entropy_wants_no_new_node_at_nodes_max() {
    let mut source = source_holding(&["n1", "n2", "n3"]);
    let config = TelemetryConfig {
        nodes_max: 2,
        ..TelemetryConfig::default()
    };
    let mut sink = TelemetryStore::new(config, id("sink"), Generation(1), "v", secs(0)).unwrap();
    assert_eq!(
        exchange(&mut sink, &mut source, secs(2)).0,
        [id("n1"), id("n2"), id("n3")]
    );
    assert_eq!(sink.map().len(), 2);
    // Full: a newer n1 is still asked for, n3 no longer.
    source
        .merge_record(secs(3), record_of("n1", 1, 2, 10.0))
        .unwrap();
    assert_eq!(exchange(&mut sink, &mut source, secs(3)).0, [id("n1")]);
    assert_eq!(sink.map().record(&id("n1")).unwrap().version.sequence.0, 2);
}

#[test]
fn anti_entropy_summaries_differ_for_any_difference_in_versions_or_tombstones() {
    let mut a = store("a", 1);
    let mut b = store("b", 1);
    a.refresh(secs(1)).unwrap();
    b.merge_record(secs(1), a.record(&id("a")).unwrap().clone())
        .unwrap();
    let in_sync = |from: &TelemetryStore, to: &mut TelemetryStore| {
        let summary = from.start_anti_entropy(secs(2)).unwrap();
        to.handle_anti_entropy(secs(2), &summary).unwrap().is_none()
    };
    // Both hold a's record only.
    assert!(in_sync(&a, &mut b));
    // b's own record, which a lacks.
    b.refresh(secs(1)).unwrap();
    assert!(!in_sync(&a, &mut b), "a lacks b's record");
    a.merge_record(secs(1), b.record(&id("b")).unwrap().clone())
        .unwrap();
    assert!(in_sync(&a, &mut b));
    // A newer version of one record.
    a.refresh(secs(5)).unwrap();
    assert!(!in_sync(&a, &mut b));
    b.merge_record(secs(5), a.record(&id("a")).unwrap().clone())
        .unwrap();
    assert!(in_sync(&a, &mut b));
    // A tombstone of a node neither holds a record of.
    a.remove_node(secs(6), &id("gone"), Generation(1)).unwrap();
    assert!(!in_sync(&a, &mut b));
    assert!(!in_sync(&b, &mut a));
}

#[test]
fn anti_entropy_budget_truncates_and_rotates() {
    let config = TelemetryConfig {
        anti_entropy_records_max: 2,
        ..TelemetryConfig::default()
    };
    let mut source = TelemetryStore::new(config, id("src"), Generation(1), "v", secs(0)).unwrap();
    for name in ["n1", "n2", "n3", "n4", "n5"] {
        let mut other = store(name, 1);
        other.refresh(secs(1)).unwrap();
        source
            .merge_record(secs(1), other.record(&id(name)).unwrap().clone())
            .unwrap();
    }
    let mut sink = store("sink", 1);
    let mut rounds = 0;
    while sink.map().len() < 5 {
        rounds += 1;
        assert!(rounds <= 3, "anti-entropy must make progress every round");
        let digest = sink.digest(secs(2));
        let batch = source.missing_for(secs(2), &digest);
        assert!(batch.records.len() <= 2);
        sink.merge_batch(secs(2), batch);
    }
    assert!(source.counters().anti_entropy_truncated >= 2);
}

#[test]
fn anti_entropy_wants_are_bounded_and_asked_again_until_held() {
    let config = TelemetryConfig {
        anti_entropy_records_max: 2,
        ..TelemetryConfig::default()
    };
    let new_store = |name: &str| {
        TelemetryStore::new(config.clone(), id(name), Generation(1), "v", secs(0)).unwrap()
    };
    let mut source = new_store("src");
    for name in ["n1", "n2", "n3", "n4", "n5"] {
        source
            .merge_record(secs(1), record_of(name, 1, 1, 10.0))
            .unwrap();
    }
    // The sink opens every exchange, so what it lacks reaches it only as
    // the records it asks for.
    let mut sink = new_store("sink");
    let mut rounds = 0;
    while sink.map().len() < 5 {
        rounds += 1;
        assert!(rounds <= 3, "anti-entropy must make progress every round");
        let (wants, push) = exchange(&mut sink, &mut source, secs(2));
        assert!(wants.len() <= 2);
        assert!(push.unwrap().records.len() <= 2);
    }
    assert_eq!(rounds, 3);

    // A peer asking for more than the bound gets the first ones, marked
    // truncated.
    let mut greedy = config.clone();
    greedy.anti_entropy_records_max = 5;
    let mut asker = TelemetryStore::new(greedy, id("asker"), Generation(1), "v", secs(0)).unwrap();
    let truncated_before = source.counters().anti_entropy_truncated;
    let (wants, push) = exchange(&mut asker, &mut source, secs(3));
    assert_eq!(wants.len(), 5);
    let push = push.unwrap();
    let sent: Vec<&str> = push
        .records
        .iter()
        .map(|record| record.node_id().as_str())
        .collect();
    assert_eq!(sent, ["n1", "n2"]);
    assert!(push.truncated);
    assert_eq!(
        source.counters().anti_entropy_truncated,
        truncated_before + 1
    );
}

#[test]
fn removed_node_is_gone_and_refused_but_rejoin_accepted() {
    let mut a = store("a", 1);
    let mut b = store("b", 1);
    let old = refresh_delta(&mut a, secs(1));
    b.receive_delta(secs(1), &old, DeltaSource::Peer).unwrap();
    let tombstone = b.remove_node(secs(2), &id("a"), Generation(1)).unwrap();
    assert_eq!(
        tombstone.key.kind,
        TelemetryKeyKind::Tombstone(Generation(1))
    );
    assert!(b.record(&id("a")).is_none());
    assert_eq!(
        b.receive_delta(secs(3), &old, DeltaSource::Peer).unwrap(),
        None
    );
    assert_eq!(b.counters().tombstoned_refused, 1);

    // The node restarts with a newer generation: accepted.
    let mut a2 = store("a", 2);
    let fresh = refresh_delta(&mut a2, secs(4));
    assert!(
        b.receive_delta(secs(4), &fresh, DeltaSource::Peer)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        b.record(&id("a")).unwrap().version.generation,
        Generation(2)
    );

    // The running generation cannot remove itself.
    assert!(matches!(
        a2.remove_node(secs(5), &id("a"), Generation(2)),
        Err(TelemetryError::RemoveSelf { .. })
    ));
}

#[test]
fn tombstones_expire_after_retention() {
    let mut b = store("b", 1);
    b.remove_node(secs(0), &id("gone"), Generation(1)).unwrap();
    assert_eq!(b.poll_timeout(), secs(0));
    b.handle_timeout(secs(0));
    assert!(b.map().tombstone(&id("gone")).is_some());
    b.handle_timeout(secs(3600));
    assert!(b.map().tombstone(&id("gone")).is_none());
    assert_eq!(b.counters().tombstones_expired, 1);
}

#[test]
fn tombstone_copies_never_outlive_the_original() {
    let mut a = store("a", 1);
    a.remove_node(secs(0), &id("gone"), Generation(1)).unwrap();
    // c hears of it through anti-entropy 30 minutes later: it keeps it only
    // for the remaining 30 minutes.
    let mut c = store("c", 1);
    let request = a.anti_entropy_request(secs(1800)).unwrap();
    c.handle_anti_entropy(secs(1800), &request).unwrap();
    assert_eq!(c.digest(secs(1800)).tombstones[0].retention_ms, 1_800_000);
    c.expire_tombstones(secs(3600));
    assert!(c.map().tombstone(&id("gone")).is_none());
    // d hears of it 5 s before expiry, under one anti-entropy interval:
    // applied (records deleted) but not kept, so it cannot bounce back.
    let mut d = store("d", 1);
    let request = a.anti_entropy_request(secs(3595)).unwrap();
    d.handle_anti_entropy(secs(3595), &request).unwrap();
    assert!(d.map().tombstone(&id("gone")).is_none());
}

#[test]
fn delta_too_large_is_reported_and_counted() {
    let config = TelemetryConfig {
        delta_bytes_max: 128,
        ..TelemetryConfig::default()
    };
    let mut a = TelemetryStore::new(config, id("a"), Generation(1), "v", secs(0)).unwrap();
    a.set_database_report(secs(0), report_with_shards(10))
        .unwrap();
    a.refresh(secs(0)).unwrap();
    assert!(matches!(
        a.local_delta(secs(0)),
        Err(TelemetryError::DeltaTooLarge { max_bytes: 128, .. })
    ));
    assert_eq!(a.counters().deltas_dropped_for_size, 1);
    // handle_timeout refreshes but produces no broadcast.
    let actions = a.handle_timeout(secs(2));
    assert!(actions.is_empty());
}

#[test]
fn record_too_large_keeps_previous_record() {
    let config = TelemetryConfig {
        delta_bytes_max: 128,
        record_bytes_max: 200,
        anti_entropy_bytes_max: 200,
        ..TelemetryConfig::default()
    };
    let mut a = TelemetryStore::new(config, id("a"), Generation(1), "v", secs(0)).unwrap();
    a.refresh(secs(0)).unwrap();
    a.set_database_report(secs(0), report_with_shards(20))
        .unwrap();
    assert!(matches!(
        a.refresh(secs(1)),
        Err(TelemetryError::RecordTooLarge { max_bytes: 200, .. })
    ));
    assert_eq!(a.local_version().unwrap().sequence.0, 1);
}

#[test]
fn own_record_from_a_reused_generation_is_overtaken() {
    // A data dir restored from a backup: generation 5 runs again from sequence 1.
    let mut before = store("a", 5);
    for second in 0..10 {
        before.refresh(secs(second)).unwrap();
    }
    let newer = before.record(&id("a")).unwrap().clone();
    let mut after = store("a", 5);
    after.refresh(secs(100)).unwrap();
    assert_eq!(
        after.merge_record(secs(101), newer).unwrap(),
        RecordMerge::Replaced
    );
    assert_eq!(after.counters().own_record_conflicts, 1);
    // The next refresh is due at once and overtakes the old run's records.
    let actions = after.handle_timeout(secs(101));
    assert!(matches!(
        actions.as_slice(),
        [TelemetryAction::Broadcast(_), ..]
    ));
    assert_eq!(after.local_version().unwrap().sequence.0, 11);
}

#[test]
fn nodes_max_bounds_the_map() {
    let config = TelemetryConfig {
        nodes_max: 2,
        ..TelemetryConfig::default()
    };
    let mut sink = TelemetryStore::new(config, id("sink"), Generation(1), "v", secs(0)).unwrap();
    for (index, name) in ["n1", "n2", "n3"].into_iter().enumerate() {
        let mut other = store(name, 1);
        other.refresh(secs(0)).unwrap();
        let result = sink.merge_record(secs(0), other.record(&id(name)).unwrap().clone());
        assert_eq!(result.is_ok(), index < 2, "{name}");
    }
    assert_eq!(sink.counters().nodes_max_refused, 1);
}

#[test]
fn malformed_deltas_are_errors_not_panics() {
    let mut b = store("b", 1);
    for bytes in [&b""[..], b"\x00", b"\xff\xff\xff", b"\x92\x02\xc0"] {
        assert!(b.receive_delta(secs(0), bytes, DeltaSource::Peer).is_err());
    }
    // Unknown envelope version is named as such.
    let next = wire::WIRE_VERSION + 1;
    let bytes = rmp_like_envelope(next);
    assert!(matches!(
        b.receive_delta(secs(0), &bytes, DeltaSource::Peer),
        Err(TelemetryError::UnsupportedVersion { version, .. }) if version == next
    ));
    assert_eq!(b.counters().decode_errors, 5);
}

/// A MessagePack `[version, nil]` envelope.
fn rmp_like_envelope(version: u16) -> Vec<u8> {
    vec![0x92, u8::try_from(version).unwrap(), 0xc0]
}

#[test]
fn invalid_record_from_peer_is_refused() {
    let mut a = store("a", 1);
    a.set_host_metrics(host(10.0)).unwrap();
    a.refresh(secs(0)).unwrap();
    let mut record = a.record(&id("a")).unwrap().clone();
    record.host.as_mut().unwrap().cpu_percent = f64::NAN;
    let mut b = store("b", 1);
    let error = b.merge_record(secs(0), record).unwrap_err();
    assert!(
        matches!(&error, TelemetryError::InvalidRecord { field, .. } if field == "host.cpu_percent"),
        "{error}"
    );
}

#[test]
fn database_report_json_and_validation() {
    let json = r#"{ "qps": 1200.5, "latency_p50_us": 800, "latency_p99_us": 4200,
        "replication_lag_ms": 12,
        "shards": { "17": { "size_bytes": 1048576, "qps": 300.0, "applied_position": 99812,
                             "role": "primary", "epoch": 4 } },
        "schema_versions": { "orders": 7 } }"#;
    let parsed: DatabaseReport = serde_json::from_str(json).unwrap();
    assert_eq!(parsed, report());
    parsed.validate().unwrap();

    // Unknown fields are refused.
    assert!(
        serde_json::from_str::<DatabaseReport>(
            r#"{"qps":1,"latency_p50_us":1,"latency_p99_us":1,"replication_lag_ms":1,"typo":1}"#
        )
        .is_err()
    );

    let cases: [(&str, Mutation<DatabaseReport>); 5] = [
        ("qps", |r| r.qps = -1.0),
        ("qps", |r| r.qps = f64::NAN),
        ("latency_p50_us", |r| r.latency_p50_us = 5000),
        ("replication_lag_ms", |r| r.replication_lag_ms = u64::MAX),
        ("shards.17.qps", |r| {
            r.shards.get_mut(&ShardId(17)).unwrap().qps = f64::INFINITY
        }),
    ];
    for (field_expected, mutate) in cases {
        let mut bad = report();
        mutate(&mut bad);
        match bad.validate() {
            Err(TelemetryError::InvalidReport { field, .. }) => assert_eq!(field, field_expected),
            other => panic!("{field_expected}: {other:?}"),
        }
    }
    let mut b = store("b", 1);
    let mut bad = report();
    bad.qps = -3.0;
    assert!(b.set_database_report(secs(0), bad).is_err());
    assert!(host(120.0).validate().is_err());
}

#[test]
fn record_json_round_trip() {
    let mut a = store("a", 1);
    a.set_host_metrics(host(42.5)).unwrap();
    a.set_database_report(secs(0), report()).unwrap();
    a.set_unreachable_peers([id("x"), id("a")]);
    a.refresh(secs(3)).unwrap();
    let record = a.record(&id("a")).unwrap();
    let json = serde_json::to_string(record).unwrap();
    assert!(json.contains(r#""node_id":"a""#), "{json}");
    assert!(json.contains(r#""report_age_ms":3000"#), "{json}");
    assert!(json.contains(r#""unreachable_peers":["x"]"#), "{json}");
    let back: shoal_membership::telemetry::NodeRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, record);
}

#[test]
fn broadcast_keys_invalidate_older_versions_of_the_same_node() {
    use foca::Invalidates;
    let key = |node: &str, generation: u64, sequence: u64| TelemetryKey {
        node_id: id(node),
        kind: TelemetryKeyKind::Record(shoal_membership::telemetry::Version {
            generation: Generation(generation),
            sequence: shoal_membership::telemetry::Sequence(sequence),
        }),
    };
    let tombstone = |node: &str, generation: u64| TelemetryKey {
        node_id: id(node),
        kind: TelemetryKeyKind::Tombstone(Generation(generation)),
    };
    assert!(key("a", 1, 2).invalidates(&key("a", 1, 1)));
    assert!(key("a", 2, 1).invalidates(&key("a", 1, 9)));
    assert!(!key("a", 1, 1).invalidates(&key("a", 1, 2)));
    assert!(!key("a", 1, 1).invalidates(&key("a", 1, 1)));
    assert!(!key("a", 1, 2).invalidates(&key("b", 1, 1)));
    assert!(tombstone("a", 1).invalidates(&key("a", 1, 9)));
    assert!(!tombstone("a", 1).invalidates(&key("a", 2, 1)));
    assert!(tombstone("a", 2).invalidates(&tombstone("a", 1)));
    assert!(!key("a", 2, 1).invalidates(&tombstone("a", 1)));
}

#[test]
fn config_validation_names_the_field() {
    let cases: [(&str, Mutation<TelemetryConfig>); 4] = [
        ("delta_bytes_max", |c| c.delta_bytes_max = 10),
        ("record_bytes_max", |c| c.record_bytes_max = 500),
        ("refresh_interval", |c| c.refresh_interval = Duration::ZERO),
        ("tombstone_retention", |c| c.tombstone_retention = secs(1)),
    ];
    for (expected, mutate) in cases {
        let mut config = TelemetryConfig::default();
        mutate(&mut config);
        match config.validate() {
            Err(TelemetryError::InvalidConfig { field, .. }) => assert_eq!(field, expected),
            other => panic!("{expected}: {other:?}"),
        }
    }
    TelemetryConfig::default().validate().unwrap();
}

#[test]
fn a_steady_node_publishes_only_material_changes_and_heartbeats() {
    let config = TelemetryConfig::default();
    let refresh = config.refresh_interval;
    let mut store = store("db-1", 1);
    store.set_host_metrics(host(10.0)).unwrap();
    assert!(
        published(store.handle_timeout(secs(0))),
        "the first record is published"
    );
    // Noise below the thresholds: nothing new to say.
    store.set_host_metrics(host(12.0)).unwrap();
    assert!(!published(store.handle_timeout(refresh)));
    assert_eq!(store.local_version().unwrap().sequence.0, 1);
    // A material change is published at the next refresh.
    store.set_host_metrics(host(30.0)).unwrap();
    assert!(published(store.handle_timeout(refresh * 2)));
    assert_eq!(store.local_version().unwrap().sequence.0, 2);
    // And with nothing new, one heartbeat version per heartbeat interval,
    // written but not broadcast.
    let heartbeats = heartbeats_in(&mut store, refresh * 2, config.heartbeat_interval * 4);
    assert_eq!(heartbeats, 4, "one heartbeat a heartbeat_interval");
}

/// Whether `actions` broadcast a delta.
fn published(actions: Vec<shoal_membership::telemetry::TelemetryAction>) -> bool {
    use shoal_membership::telemetry::TelemetryAction;
    actions
        .iter()
        .any(|action| matches!(action, TelemetryAction::Broadcast(_)))
}

/// Drives `store`'s refreshes for `span` after `from` with nothing
/// material changing (no broadcast) and returns how many heartbeat
/// versions it wrote.
fn heartbeats_in(store: &mut TelemetryStore, from: Duration, span: Duration) -> u64 {
    let refresh = TelemetryConfig::default().refresh_interval;
    let before = store.local_version().unwrap().sequence.0;
    let mut now = from;
    while now < from + span {
        now += refresh;
        assert!(!published(store.handle_timeout(now)), "nothing material");
    }
    store.local_version().unwrap().sequence.0 - before
}

#[test]
fn heartbeats_stretch_as_the_cluster_doubles_past_128_nodes() {
    let config = TelemetryConfig::default();
    let base = config.heartbeat_interval;
    for (nodes, times) in [
        (0, 1),
        (1, 1),
        (128, 1),
        (129, 2),
        (256, 2),
        (257, 3),
        (1000, 4),
        (1024, 4),
        (1025, 5),
        (10_000, 8),
    ] {
        assert_eq!(config.heartbeat_for(nodes), base * times, "{nodes} nodes");
    }
    // Never past an hour, never under the configured interval.
    let long = TelemetryConfig {
        heartbeat_interval: secs(1800),
        ..config.clone()
    };
    assert_eq!(long.heartbeat_for(10_000), secs(3600));
    assert_eq!(long.heartbeat_for(10), secs(1800));

    // A store holding 300 records (257..=512: 3×) writes one heartbeat in
    // three intervals.
    let mut store = store("db-1", 1);
    store.set_host_metrics(host(10.0)).unwrap();
    assert!(published(store.handle_timeout(secs(0))));
    for n in 0..299 {
        let name = format!("peer-{n:03}");
        store
            .merge_record(secs(0), record_of(&name, 1, 1, 1.0))
            .unwrap();
    }
    assert_eq!(store.map().len(), 300);
    let heartbeats = heartbeats_in(&mut store, secs(0), base * 6);
    assert_eq!(heartbeats, 2, "one heartbeat every 3 × heartbeat_interval");
}

/// A record of `name` at `generation.sequence` carrying `cpu_percent`
/// (not validated: NaN makes an invalid record).
fn record_of(name: &str, generation: u64, sequence: u64, cpu_percent: f64) -> NodeRecord {
    let mut writer = store(name, generation);
    writer.set_host_metrics(host(1.0)).unwrap();
    writer.refresh(secs(0)).unwrap();
    let mut record = writer.record(&id(name)).unwrap().clone();
    record.version.sequence = Sequence(sequence);
    record.host.as_mut().unwrap().cpu_percent = cpu_percent;
    record
}

fn delta_of(record: &NodeRecord) -> Vec<u8> {
    wire::encode_delta(&Delta::Record(record.clone()), usize::MAX)
        .unwrap()
        .bytes
}

#[test]
fn stale_and_duplicate_records_are_settled_by_version_without_decoding() {
    let mut b = store("b", 1);
    let held = record_of("a", 1, 2, 10.0);
    assert!(
        b.receive_delta(secs(1), &delta_of(&held), DeltaSource::Peer)
            .unwrap()
            .is_some()
    );
    // An invalid record (NaN) that is older than the one held is no news:
    // stale, never decoded, so not a decode error.
    let stale_invalid = record_of("a", 1, 1, f64::NAN);
    assert_eq!(
        b.receive_delta(secs(2), &delta_of(&stale_invalid), DeltaSource::Peer)
            .unwrap(),
        None
    );
    // A record whose body is garbage after a valid head, at the held
    // version: its bytes differ from the held ones, so it is decoded (a
    // rival must be valid) and refused.
    let mut garbage = wire::encode_record(&held);
    garbage.push(0xc0);
    let garbage = EncodedRecord::from_bytes(&garbage).unwrap();
    assert_eq!(garbage.version(), held.version);
    let garbage_delta = wire::encode_record_delta(&garbage, usize::MAX).unwrap();
    assert!(matches!(
        b.receive_delta(secs(2), &garbage_delta.bytes, DeltaSource::Peer),
        Err(TelemetryError::Malformed { what: "record", .. })
    ));
    // The same delta again: a duplicate.
    assert_eq!(
        b.receive_delta(secs(3), &delta_of(&held), DeltaSource::Peer)
            .unwrap(),
        None
    );
    assert_eq!(b.counters().stale_received, 2);
    assert_eq!(b.counters().decode_errors, 1);
    assert_eq!(b.counters().same_version_conflicts, 0);
    // A newer invalid record is decoded, refused, and changes nothing.
    let newer_invalid = record_of("a", 1, 3, f64::NAN);
    assert!(matches!(
        b.receive_delta(secs(4), &delta_of(&newer_invalid), DeltaSource::Peer),
        Err(TelemetryError::InvalidRecord { .. })
    ));
    assert_eq!(b.counters().decode_errors, 2);
    assert_eq!(b.record(&id("a")), Some(&held));
    assert_eq!(b.meta(&id("a")).unwrap().updated_at, secs(1));
}

#[test]
fn same_version_rivals_are_tie_broken_by_their_bytes_in_either_order() {
    let x = record_of("a", 1, 1, 10.0);
    let y = record_of("a", 1, 1, 20.0);
    let larger = std::cmp::max(wire::encode_record(&x), wire::encode_record(&y));
    let mut b = store("b", 1);
    let mut c = store("c", 1);
    for (sink, first, second) in [(&mut b, &x, &y), (&mut c, &y, &x)] {
        sink.receive_delta(secs(1), &delta_of(first), DeltaSource::Peer)
            .unwrap();
        sink.receive_delta(secs(1), &delta_of(second), DeltaSource::Peer)
            .unwrap();
        assert_eq!(sink.counters().same_version_conflicts, 1);
        assert_eq!(sink.map().held(&id("a")).unwrap().bytes(), &larger[..]);
    }
    assert_eq!(b.map(), c.map());
}

/// A MessagePack `bin`, for hand-built messages.
struct Bin<'a>(&'a [u8]);

impl serde::Serialize for Bin<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// A `Push` whose batch carries `records` as given, unchecked.
fn raw_push(records: &[&[u8]]) -> Vec<u8> {
    let records: Vec<Bin<'_>> = records.iter().map(|bytes| Bin(bytes)).collect();
    let body = BTreeMap::from([("Push", ((Vec::<()>::new(), records, false),))]);
    rmp_serde::to_vec(&(wire::WIRE_VERSION, body)).unwrap()
}

#[test]
fn anti_entropy_batches_refuse_unreadable_records_whole_and_bad_records_alone() {
    let config = TelemetryConfig {
        delta_bytes_max: 200,
        record_bytes_max: 300,
        anti_entropy_bytes_max: 300,
        ..TelemetryConfig::default()
    };
    let mut b = TelemetryStore::new(config, id("b"), Generation(1), "v", secs(0)).unwrap();
    let good = wire::encode_record(&record_of("n1", 1, 1, 10.0));
    // The hand-built push matches what the encoder writes.
    let push = AntiEntropyMessage::Push {
        batch: RecordBatch {
            records: vec![EncodedRecord::from_bytes(&good).unwrap()],
            ..RecordBatch::default()
        },
    };
    assert_eq!(
        wire::encode_anti_entropy(&push, usize::MAX).unwrap(),
        raw_push(&[&good])
    );
    // A record whose head cannot be read spoils the whole message.
    for unreadable in [&b"\x00"[..], b"", &good[..3], b"\x97\xc0"] {
        assert!(
            b.handle_anti_entropy(secs(1), &raw_push(&[&good, unreadable]))
                .is_err()
        );
    }
    assert_eq!(b.counters().decode_errors, 4);
    assert_eq!(b.counters().anti_entropy_messages, 0);
    assert!(b.map().is_empty());

    // Records that are news but invalid, malformed or too large are
    // refused one by one; the rest merge.
    let invalid = wire::encode_record(&record_of("n2", 1, 1, f64::NAN));
    let mut malformed = wire::encode_record(&record_of("n3", 1, 1, 10.0));
    malformed.truncate(malformed.len() - 1);
    let mut big = record_of("n4", 1, 1, 10.0);
    big.database = Some(Box::new(DatabaseSnapshot {
        report_age_ms: 0,
        report: report_with_shards(10),
    }));
    let big = wire::encode_record(&big);
    assert!(big.len() > 300);
    assert!(
        b.handle_anti_entropy(secs(1), &raw_push(&[&invalid, &malformed, &big, &good]))
            .unwrap()
            .is_none()
    );
    assert_eq!(b.counters().decode_errors, 7);
    assert_eq!(b.counters().versions_received, 1);
    assert_eq!(b.map().len(), 1);
    assert_eq!(b.map().held(&id("n1")).unwrap().bytes(), &good[..]);
    assert_eq!(b.meta(&id("n1")).unwrap().encoded_bytes, good.len());
}

/// A `Request` whose digest carries `entries` (wire form, unchecked) and
/// `tombstones`.
fn raw_request(entries: &[u8], tombstones: &[Tombstone]) -> Vec<u8> {
    let body = BTreeMap::from([("Request", ((Bin(entries), tombstones),))]);
    rmp_serde::to_vec(&(wire::WIRE_VERSION, body)).unwrap()
}

/// Digest entries in wire form: id length, id, generation, sequence (all
/// numbers here below 128, so one byte each).
fn raw_entries(entries: &[(&str, u8, u8)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (node, generation, sequence) in entries {
        bytes.push(u8::try_from(node.len()).unwrap());
        bytes.extend_from_slice(node.as_bytes());
        bytes.extend([*generation, *sequence]);
    }
    bytes
}

#[test]
fn malformed_digests_are_refused_and_change_nothing() {
    let config = TelemetryConfig {
        digest_bytes_max: 1024,
        ..TelemetryConfig::default()
    };
    let mut b = TelemetryStore::new(config, id("b"), Generation(1), "v", secs(0)).unwrap();
    b.refresh(secs(0)).unwrap();
    let gone = Tombstone {
        node_id: id("gone"),
        generation: Generation(1),
        retention_ms: 3_600_000,
    };
    // The hand-built request matches what the encoder writes.
    let good = raw_entries(&[("a", 1, 1), ("b", 1, 1)]);
    let digest = Digest::new(
        [(id("b"), version(1, 1)), (id("a"), version(1, 1))],
        vec![gone.clone()],
    );
    assert_eq!(digest.records().bytes(), &good[..]);
    assert_eq!(
        wire::encode_anti_entropy(
            &AntiEntropyMessage::Request {
                digest: digest.clone()
            },
            usize::MAX
        )
        .unwrap(),
        raw_request(&good, std::slice::from_ref(&gone))
    );

    let mut too_long = Vec::new();
    for n in 0..100 {
        too_long.extend(raw_entries(&[(&format!("node-{n:03}"), 1, 1)]));
    }
    assert!(too_long.len() > 1024);
    let bad: [&[u8]; 6] = [
        &raw_entries(&[("b", 1, 1), ("a", 1, 1)]),
        &raw_entries(&[("a", 1, 1), ("a", 1, 2)]),
        &good[..good.len() - 1],
        &[0x05, b'a', 1, 1],
        &[
            0x01, b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 1,
        ],
        &too_long,
    ];
    for (index, entries) in bad.iter().enumerate() {
        let before = b.clone();
        let error = b
            .handle_anti_entropy(secs(1), &raw_request(entries, std::slice::from_ref(&gone)))
            .unwrap_err();
        assert!(
            matches!(
                error,
                TelemetryError::Malformed { what: "digest", .. }
                    | TelemetryError::MessageTooLarge { what: "digest", .. }
            ),
            "{index}: {error}"
        );
        assert_eq!(b.counters().decode_errors, index as u64 + 1);
        assert_eq!(b.counters().anti_entropy_messages, 0);
        assert_eq!(b.counters().versions_sent, 0);
        assert_eq!(
            b.map(),
            before.map(),
            "{index}: the tombstone was not taken"
        );
    }
    // The well-formed one is answered, and its tombstone taken.
    assert!(
        b.handle_anti_entropy(secs(1), &raw_request(&good, &[gone]))
            .unwrap()
            .is_some()
    );
    assert_eq!(b.map().tombstone(&id("gone")), Some(Generation(1)));
}

fn version(generation: u64, sequence: u64) -> shoal_membership::telemetry::Version {
    shoal_membership::telemetry::Version {
        generation: Generation(generation),
        sequence: Sequence(sequence),
    }
}
