//! Model tests: the sled store and the in-memory store behave identically on random
//! operation sequences (including sled reopen after sync), and a crash of the
//! in-memory store returns exactly the state of the last sync.

#![allow(clippy::field_reassign_with_default)] // raft-rs protobuf types

use proptest::prelude::*;
use raft::Storage as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

use super::{LogState, LogStore, MemStorage, SledStorage};

#[derive(Clone, Debug)]
enum Step {
    /// Append `count` entries starting `back` entries before the next free index.
    Append {
        back: u64,
        count: u64,
        term: u64,
    },
    SetHardState {
        term: u64,
        commit_back: u64,
    },
    SetConfState {
        n_voters: u64,
    },
    /// Snapshot `back` entries before the last index, keeping `retain` entries.
    SaveSnapshot {
        back: u64,
        retain: u64,
        data: Vec<u8>,
    },
    /// Install a snapshot `ahead` entries past the last index.
    InstallSnapshot {
        ahead: u64,
        term: u64,
    },
    Sync,
    /// Sync, then close and reopen the sled store (the in-memory store stays).
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u64..3, 0u64..5, 1u64..4).prop_map(|(back, count, term)| Step::Append { back, count, term }),
        1 => (1u64..4, 0u64..3).prop_map(|(term, commit_back)| Step::SetHardState { term, commit_back }),
        1 => (1u64..4).prop_map(|n_voters| Step::SetConfState { n_voters }),
        1 => (0u64..4, 0u64..3, proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(back, retain, data)| Step::SaveSnapshot { back, retain, data }),
        1 => (0u64..3, 1u64..4).prop_map(|(ahead, term)| Step::InstallSnapshot { ahead, term }),
        1 => Just(Step::Sync),
        1 => Just(Step::Reopen),
    ]
}

fn entry(index: u64, term: u64) -> Entry {
    let mut entry = Entry::default();
    entry.index = index;
    entry.term = term;
    entry.data = index.to_be_bytes().to_vec().into();
    entry
}

fn snapshot(index: u64, term: u64, data: Vec<u8>) -> Snapshot {
    let mut snapshot = Snapshot::default();
    snapshot.data = data.into();
    snapshot.mut_metadata().index = index;
    snapshot.mut_metadata().term = term;
    snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    snapshot
}

/// Applies one step to a store; returns whether the write was accepted.
fn apply<S: LogStore>(store: &mut S, step: &Step) -> bool {
    let last = store.last_index().unwrap();
    let first = store.first_index().unwrap();
    match step {
        Step::Append { back, count, term } => {
            let start = (last + 1).saturating_sub(*back).max(1);
            let entries: Vec<Entry> = (start..start + count).map(|i| entry(i, *term)).collect();
            store.append(&entries).is_ok()
        }
        Step::SetHardState { term, commit_back } => {
            let mut hard_state = HardState::default();
            hard_state.term = *term;
            hard_state.commit = last.saturating_sub(*commit_back);
            store.set_hard_state(&hard_state).is_ok()
        }
        Step::SetConfState { n_voters } => {
            let mut conf_state = ConfState::default();
            conf_state.voters = (1..=*n_voters).collect();
            store.set_conf_state(&conf_state).is_ok()
        }
        Step::SaveSnapshot { back, retain, data } => {
            let index = last.saturating_sub(*back).max(first.saturating_sub(1));
            let Ok(term) = store.term(index) else {
                return false;
            };
            let compact = (index + 1).saturating_sub(*retain).max(first);
            store
                .save_snapshot(&snapshot(index, term, data.clone()), compact)
                .is_ok()
        }
        Step::InstallSnapshot { ahead, term } => store
            .install_snapshot(&snapshot(last + ahead, *term, vec![7]))
            .is_ok(),
        Step::Sync | Step::Reopen => store.sync().is_ok(),
    }
}

/// Everything raft can read from a store.
type Observed = (
    HardState,
    ConfState,
    u64,
    u64,
    Vec<Entry>,
    Vec<u64>,
    Snapshot,
);

fn observe<S: LogStore>(store: &S) -> Observed {
    let first = store.first_index().unwrap();
    let last = store.last_index().unwrap();
    let entries = store
        .entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
        .unwrap();
    let terms = (first - 1..=last).map(|i| store.term(i).unwrap()).collect();
    let state = store.initial_state().unwrap();
    (
        state.hard_state,
        state.conf_state,
        first,
        last,
        entries,
        terms,
        store.last_snapshot(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sled_store_matches_mem_store(steps in proptest::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut mem = MemStorage::new();
        let mut sled = SledStorage::open_path(dir.path()).unwrap();
        for step in &steps {
            let accepted_mem = apply(&mut mem, step);
            let accepted_sled = apply(&mut sled, step);
            prop_assert_eq!(accepted_mem, accepted_sled, "step {:?}", step);
            if matches!(step, Step::Reopen) {
                // A clean close: what was written is synced first. (What an
                // unsynced write becomes after a crash is the crash test's
                // subject; left to sled's background flusher it would make
                // this test depend on timing.)
                sled.sync().unwrap();
                drop(sled);
                sled = SledStorage::reopen_path(dir.path()).unwrap();
            }
            prop_assert_eq!(observe(&mem), observe(&sled), "after {:?}", step);
        }
    }

    #[test]
    fn crash_returns_the_last_synced_state(steps in proptest::collection::vec(step(), 1..40)) {
        let mut mem = MemStorage::new();
        let mut synced: LogState = LogState::default();
        for step in &steps {
            apply(&mut mem, step);
            if matches!(step, Step::Sync | Step::Reopen) {
                synced = mem.live_state();
            }
        }
        mem.crash();
        prop_assert_eq!(mem.live_state(), synced);
        prop_assert_eq!(mem.unsynced_writes(), 0);
    }
}

#[test]
fn refuses_gaps_and_overwriting_compacted_entries() {
    let mut mem = MemStorage::new();
    mem.append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
        .unwrap();
    assert!(mem.append(&[entry(5, 1)]).is_err(), "gap");
    mem.save_snapshot(&snapshot(2, 1, vec![]), 3).unwrap();
    assert_eq!(mem.first_index().unwrap(), 3);
    assert_eq!(mem.term(2).unwrap(), 1);
    assert!(mem.append(&[entry(2, 2)]).is_err(), "overwrites compacted");
    mem.append(&[entry(3, 2)]).unwrap();
    assert_eq!(mem.last_index().unwrap(), 3);
    assert_eq!(mem.term(3).unwrap(), 2);
}

#[test]
fn snapshot_request_is_recorded_when_peer_is_missing() {
    let mut mem = MemStorage::new();
    mem.install_snapshot(&snapshot(5, 1, vec![1])).unwrap();
    assert!(mem.snapshot(0, 1).is_ok());
    assert!(!mem.take_snapshot_request());
    assert!(
        mem.snapshot(0, 9).is_err(),
        "peer 9 is not in the snapshot's configuration"
    );
    assert!(mem.take_snapshot_request());
    assert!(!mem.take_snapshot_request());
}
