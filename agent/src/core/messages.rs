//! The messages agents exchange on QUIC streams (everything that is not a
//! SWIM datagram): Raft batches between seeds, the seed-group bootstrap
//! handshake, writes forwarded to the leader, read barriers, and catalog
//! replication to non-seed agents.
//!
//! Every message is one MessagePack value behind a format byte; anything
//! that does not decode is counted and dropped by the receiver.
//!
//! Format 2 writes every byte string as MessagePack `bin`. Format 1 wrote
//! them as arrays of integers, one per byte: larger on the wire and, at
//! 1,000 agents, about 7 % of the simulator's time spent encoding and
//! decoding them. Both decode, so an agent reads an older agent's
//! messages; an older agent drops format 2 as malformed (see
//! ARCHITECTURE.md on upgrading in place).

use serde::{Deserialize, Serialize};
use shoal_consensus::{
    CatalogIndex, CommandResult, CommittedEntry, MembershipChange, NodeId, RequestId,
};

/// Format byte of the first format, whose byte strings were integer arrays:
/// still decoded, never written.
pub const PEER_FORMAT_V1: u8 = 1;
/// Format byte in front of every peer message written.
pub const PEER_FORMAT_V2: u8 = 2;
/// Largest peer message accepted, in bytes (a catalog snapshot is the largest).
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 << 20;

/// One message between agents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Raft messages for one seed, each encoded with `shoal_consensus::encode_message`.
    Raft(#[serde(with = "byte_strings")] Vec<Vec<u8>>),
    /// "Would you form the seed group with exactly these seeds?"
    BootstrapProbe {
        /// The seeds the asker sees, sorted.
        candidates: Vec<NodeId>,
    },
    /// The answer to a [`PeerMessage::BootstrapProbe`].
    BootstrapReply {
        /// Whether the answering seed already runs a Raft group.
        bootstrapped: bool,
        /// The seeds the answering seed sees, sorted.
        candidates: Vec<NodeId>,
    },
    /// A write for the leader to propose (an encoded `shoal_consensus::Command`).
    Submit {
        /// The encoded command.
        #[serde(with = "serde_bytes")]
        command: Vec<u8>,
    },
    /// A seed-group change for the leader to make.
    ChangeSeeds {
        /// Correlates the answer.
        request_id: RequestId,
        /// What to change.
        change: SeedChange,
    },
    /// The fate of a forwarded write or seed change.
    SubmitResult {
        /// The request.
        request_id: RequestId,
        /// What happened.
        outcome: SubmitOutcome,
    },
    /// "Confirm you are still the leader and tell me the commit index."
    ReadBarrier {
        /// Correlates the answer.
        id: u64,
    },
    /// The answer to a [`PeerMessage::ReadBarrier`].
    ReadBarrierDone {
        /// The barrier.
        id: u64,
        /// The commit index at confirmation; `None` if the receiver is not the leader.
        index: Option<CatalogIndex>,
        /// The leader as the receiver knows it.
        leader: Option<NodeId>,
    },
    /// A catalog copy asks a seed for what follows `after`.
    CatalogPull {
        /// The copy's applied index.
        after: CatalogIndex,
    },
    /// Entries that follow the puller's index (empty: it is up to date).
    CatalogEntries {
        /// The entries, in order.
        entries: Vec<CommittedEntry>,
        /// The leader as the seed knows it.
        leader: Option<NodeId>,
        /// The seed keeps the pull parked after these entries, which bring
        /// the copy up to the seed's catalog: what commits next follows
        /// without another pull, until the pull's wait ends (an empty
        /// answer, `false`). Written only when `true`, so an answer that is
        /// not kept has the bytes older agents read; absent: `false`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        kept: bool,
    },
    /// A message of the membership layer: telemetry anti-entropy, or a
    /// member-table push-pull (see `Membership::handle_stream`).
    Membership(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The whole catalog, for a copy too far behind for entries.
    CatalogSnapshot {
        /// `Catalog::encode` bytes.
        #[serde(with = "serde_bytes")]
        catalog: Vec<u8>,
        /// The leader as the seed knows it.
        leader: Option<NodeId>,
    },
}

/// A change of the seed group, made by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeedChange {
    /// Add or remove voters (through a joint configuration when several).
    Membership(Vec<MembershipChange>),
    /// Hand leadership to this voter.
    TransferLeader(NodeId),
}

/// What became of a submitted write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SubmitOutcome {
    /// Committed and applied at `index` with this result (a rejection is still
    /// committed and audited).
    Applied {
        /// Where it committed.
        index: CatalogIndex,
        /// What it produced.
        result: CommandResult,
    },
    /// A seed change was accepted by the leader (it commits asynchronously).
    Accepted,
    /// The receiver is not the leader; try `leader`.
    NotLeader {
        /// The leader as the receiver knows it.
        leader: Option<NodeId>,
    },
    /// It cannot be done: a refused seed change, a dropped proposal, no quorum
    /// in time. Nothing was applied.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A list of byte strings, each written as `bin` (read from `bin` or from
/// an integer array).
mod byte_strings {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub(super) fn serialize<S: Serializer>(
        list: &[Vec<u8>],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(list.iter().map(|bytes| Bytes::new(bytes)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Vec<u8>>, D::Error> {
        let list = Vec::<ByteBuf>::deserialize(deserializer)?;
        Ok(list.into_iter().map(ByteBuf::into_vec).collect())
    }
}

impl PeerMessage {
    /// The format byte and the MessagePack body.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![PEER_FORMAT_V2];
        rmp_serde::encode::write(&mut bytes, self).expect("peer messages always encode");
        bytes
    }

    /// Decodes a message; `None` for anything malformed or too large.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > PEER_MESSAGE_BYTES_MAX {
            return None;
        }
        match bytes.split_first() {
            Some((&(PEER_FORMAT_V1 | PEER_FORMAT_V2), body)) => rmp_serde::from_slice(body).ok(),
            _ => None,
        }
    }

    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Raft(_) => "raft",
            PeerMessage::BootstrapProbe { .. } => "bootstrap_probe",
            PeerMessage::BootstrapReply { .. } => "bootstrap_reply",
            PeerMessage::Submit { .. } => "submit",
            PeerMessage::ChangeSeeds { .. } => "change_seeds",
            PeerMessage::SubmitResult { .. } => "submit_result",
            PeerMessage::ReadBarrier { .. } => "read_barrier",
            PeerMessage::ReadBarrierDone { .. } => "read_barrier_done",
            PeerMessage::CatalogPull { .. } => "catalog_pull",
            PeerMessage::CatalogEntries { .. } => "catalog_entries",
            PeerMessage::CatalogSnapshot { .. } => "catalog_snapshot",
            PeerMessage::Membership(_) => "membership",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_roundtrip_and_garbage_is_refused() {
        let message = PeerMessage::BootstrapProbe {
            candidates: vec![NodeId::new("a").unwrap(), NodeId::new("b").unwrap()],
        };
        assert_eq!(PeerMessage::decode(&message.encode()), Some(message));
        assert_eq!(PeerMessage::decode(b""), None);
        assert_eq!(PeerMessage::decode(b"\x01garbage"), None);
        // A known format with no body, and an unknown format.
        assert_eq!(PeerMessage::decode(b"\x02"), None);
        assert_eq!(PeerMessage::decode(b"\x03"), None);
    }

    /// An answer that is not kept is written as before `kept` existed, so
    /// agents that do not know the field read it; a kept one round-trips.
    #[test]
    fn entries_not_kept_have_the_bytes_of_the_two_field_answer() {
        #[derive(Serialize)]
        enum Before {
            CatalogEntries {
                entries: Vec<CommittedEntry>,
                leader: Option<NodeId>,
            },
        }
        let entries = vec![CommittedEntry {
            index: CatalogIndex(7),
            term: shoal_consensus::Term(2),
            kind: shoal_consensus::CommittedKind::Normal {
                data: vec![1, 2, 3],
            },
        }];
        let leader = Some(NodeId::new("seed-1").unwrap());
        let mut before = vec![PEER_FORMAT_V2];
        rmp_serde::encode::write(
            &mut before,
            &Before::CatalogEntries {
                entries: entries.clone(),
                leader: leader.clone(),
            },
        )
        .unwrap();
        let answer = |kept| PeerMessage::CatalogEntries {
            entries: entries.clone(),
            leader: leader.clone(),
            kept,
        };
        assert_eq!(answer(false).encode(), before);
        assert_ne!(answer(true).encode(), before);
        assert_eq!(
            PeerMessage::decode(&answer(true).encode()),
            Some(answer(true))
        );
    }

    /// Byte strings are written as `bin` (their bytes appear as they are),
    /// and format 1's integer arrays still decode to the same message.
    #[test]
    fn byte_strings_are_bin_and_format_one_still_decodes() {
        let payload: Vec<u8> = (0..=255).collect();
        let messages = [
            PeerMessage::Raft(vec![payload.clone(), vec![], vec![0xff; 3]]),
            PeerMessage::Submit {
                command: payload.clone(),
            },
            PeerMessage::Membership(payload.clone()),
            PeerMessage::CatalogSnapshot {
                catalog: payload.clone(),
                leader: None,
            },
            PeerMessage::CatalogEntries {
                entries: vec![CommittedEntry {
                    index: CatalogIndex(7),
                    term: shoal_consensus::Term(2),
                    kind: shoal_consensus::CommittedKind::Normal {
                        data: payload.clone(),
                    },
                }],
                leader: None,
                kept: false,
            },
            PeerMessage::CatalogEntries {
                entries: vec![CommittedEntry {
                    index: CatalogIndex(8),
                    term: shoal_consensus::Term(2),
                    kind: shoal_consensus::CommittedKind::Membership {
                        data: payload.clone(),
                        seeds: shoal_consensus::SeedGroup::default(),
                    },
                }],
                leader: None,
                kept: true,
            },
        ];
        /// The same message with every byte string as an integer array.
        #[derive(Serialize)]
        enum FormatOne {
            Raft(Vec<Vec<u8>>),
            Submit {
                command: Vec<u8>,
            },
            Membership(Vec<u8>),
            CatalogEntries {
                entries: Vec<EntryOne>,
                leader: Option<NodeId>,
            },
            CatalogSnapshot {
                catalog: Vec<u8>,
                leader: Option<NodeId>,
            },
        }
        #[derive(Serialize)]
        struct EntryOne {
            index: CatalogIndex,
            term: shoal_consensus::Term,
            kind: KindOne,
        }
        #[derive(Serialize)]
        enum KindOne {
            Normal {
                data: Vec<u8>,
            },
            Membership {
                data: Vec<u8>,
                seeds: shoal_consensus::SeedGroup,
            },
        }
        for message in messages {
            let bytes = message.encode();
            assert_eq!(bytes[0], PEER_FORMAT_V2);
            assert!(
                bytes.windows(payload.len()).any(|window| window == payload),
                "{} does not carry its bytes as they are",
                message.kind()
            );
            assert_eq!(PeerMessage::decode(&bytes), Some(message.clone()));
            let one = match message.clone() {
                PeerMessage::Raft(batch) => FormatOne::Raft(batch),
                PeerMessage::Submit { command } => FormatOne::Submit { command },
                PeerMessage::Membership(bytes) => FormatOne::Membership(bytes),
                PeerMessage::CatalogSnapshot { catalog, leader } => {
                    FormatOne::CatalogSnapshot { catalog, leader }
                }
                PeerMessage::CatalogEntries {
                    entries, leader, ..
                } => FormatOne::CatalogEntries {
                    entries: entries
                        .into_iter()
                        .map(|entry| EntryOne {
                            index: entry.index,
                            term: entry.term,
                            kind: match entry.kind {
                                shoal_consensus::CommittedKind::Normal { data } => {
                                    KindOne::Normal { data }
                                }
                                shoal_consensus::CommittedKind::Membership { data, seeds } => {
                                    KindOne::Membership { data, seeds }
                                }
                            },
                        })
                        .collect(),
                    leader,
                },
                other => panic!("not in this test: {other:?}"),
            };
            let mut old = vec![PEER_FORMAT_V1];
            rmp_serde::encode::write(&mut old, &one).unwrap();
            assert!(!old.windows(payload.len()).any(|window| window == payload));
            // Older agents' entries say nothing of a kept pull: not kept.
            let expected = match message {
                PeerMessage::CatalogEntries {
                    entries, leader, ..
                } => PeerMessage::CatalogEntries {
                    entries,
                    leader,
                    kept: false,
                },
                message => message,
            };
            assert_eq!(PeerMessage::decode(&old), Some(expected));
        }
    }
}
