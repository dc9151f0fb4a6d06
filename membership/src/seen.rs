//! Leaving out of a SWIM packet the updates foca would ignore, before foca
//! sees them.
//!
//! foca finds the member an update is about by walking its whole member
//! list, so every update it applies costs O(n); and SWIM repeats every update
//! many times (each member that learns it passes it on up to
//! `max_transmissions` times), so most updates a member receives are ones it
//! has already applied. At 1,000 members that walk was the largest single
//! cost of a cluster's boot. [`SeenUpdates`] remembers, per member, the
//! strongest update foca has processed about it, and leaves out of each
//! packet every update that cannot change foca's view.
//!
//! Why leaving an update out is exact. foca orders the updates about one
//! identity by [`rank`] (the suspicion subprotocol's order of preference:
//! a higher incarnation wins, suspect beats alive at the same incarnation,
//! down beats everything) and applies one only if it ranks strictly above
//! what it holds; that order only moves up. So once foca has processed an
//! update `(identity, r)` — applied or refused — an update about the same
//! identity ranked at most `r` is a no-op for as long as foca remembers the
//! member:
//! * if foca still holds that identity, it holds a rank of at least `r`;
//! * if it holds another identity, that one beat ours in an address
//!   conflict (a newer generation or rejoin), and beats it again.
//!
//! The floors are recorded only for packets foca processed the updates of
//! (addressed to this node, from a sender foca considers active; see
//! [`Filtered::src`]), and forgotten when foca forgets a member or when a
//! member-table merge may have changed it behind our back. Updates about
//! this node itself always go through: foca refutes suspicions of us from
//! them.

use std::borrow::Cow;

use foca::{Header, Member, Message, State};

use crate::codec::decode_item as decode;
use crate::lookup::LookupMap;
use crate::{Identity, NodeId};

/// The rank of an update in foca's order of preference: an update replaces
/// what foca holds about the same identity only if it ranks strictly higher.
pub(crate) fn rank(member: &Member<Identity>) -> u64 {
    let incarnation = u64::from(member.incarnation());
    match member.state() {
        State::Alive => incarnation * 2,
        State::Suspect => incarnation * 2 + 1,
        State::Down => u64::MAX,
    }
}

/// A packet's payload without the updates foca would ignore.
pub(crate) struct Filtered<'a> {
    /// What to hand foca: the original payload if nothing was left out.
    pub(crate) payload: Cow<'a, [u8]>,
    /// The sender. foca processes a packet's updates only if it considers
    /// the sender active, so the kept updates may be recorded only if the
    /// sender is active once foca is done.
    pub(crate) src: Identity,
    /// The updates handed to foca, to [`SeenUpdates::record`] afterwards.
    pub(crate) kept: Vec<Member<Identity>>,
    /// How many updates were left out.
    pub(crate) left_out: usize,
}

/// Per member, the strongest update foca has processed about it.
#[derive(Debug, Default)]
pub(crate) struct SeenUpdates {
    /// Looked up for every update of every packet, never walked.
    floors: LookupMap<NodeId, (Identity, u64)>,
}

impl SeenUpdates {
    /// Splits `payload` (a foca packet, envelope removed) and leaves out the
    /// updates foca would ignore. `None` when there is nothing to do or the
    /// payload does not parse: foca then sees it unchanged (and reports what
    /// is wrong with it), and nothing is recorded.
    pub(crate) fn filter<'a>(&self, me: &Identity, payload: &'a [u8]) -> Option<Filtered<'a>> {
        let mut rest = payload;
        let header: Header<Identity> = decode(&mut rest).ok()?;
        // foca's own test: only packets addressed to us carry updates it
        // applies (an announce may name an older identity of ours).
        let addressed_to_us = header.dst == *me
            || (header.message == Message::Announce && header.dst.node_id == me.node_id);
        if !addressed_to_us || header.message == Message::Broadcast || rest.len() < 2 {
            return None;
        }
        let header_len = payload.len() - rest.len();
        let count = u16::from_be_bytes([rest[0], rest[1]]);
        rest = &rest[2..];
        let mut kept = Vec::with_capacity(usize::from(count));
        let mut kept_bytes: Vec<&[u8]> = Vec::with_capacity(usize::from(count));
        let mut left_out = 0;
        for _ in 0..count {
            let start = rest;
            let update: Member<Identity> = decode(&mut rest).ok()?;
            let bytes = &start[..start.len() - rest.len()];
            if update.id().node_id != me.node_id && self.ignored(&update) {
                left_out += 1;
            } else {
                kept.push(update);
                kept_bytes.push(bytes);
            }
        }
        let payload = if left_out == 0 {
            Cow::Borrowed(payload)
        } else {
            let mut rebuilt = Vec::with_capacity(payload.len());
            rebuilt.extend_from_slice(&payload[..header_len]);
            rebuilt.extend_from_slice(&(count - left_out as u16).to_be_bytes());
            for bytes in kept_bytes {
                rebuilt.extend_from_slice(bytes);
            }
            // The custom broadcasts that follow the updates, untouched.
            rebuilt.extend_from_slice(rest);
            Cow::Owned(rebuilt)
        };
        Some(Filtered {
            payload,
            src: header.src,
            kept,
            left_out,
        })
    }

    /// Whether foca would ignore `update`: it already processed one about
    /// the same identity ranked at least as high.
    fn ignored(&self, update: &Member<Identity>) -> bool {
        self.floors
            .get(&update.id().node_id)
            .is_some_and(|(identity, floor)| identity == update.id() && rank(update) <= *floor)
    }

    /// Records updates foca has processed (in order). Updates about `me`
    /// are not recorded.
    pub(crate) fn record(&mut self, me: &NodeId, processed: Vec<Member<Identity>>) {
        for update in processed {
            if update.id().node_id == *me {
                continue;
            }
            let rank = rank(&update);
            match self.floors.get_mut(&update.id().node_id) {
                Some((identity, floor)) if identity == update.id() => *floor = (*floor).max(rank),
                Some(slot) => *slot = (update.id().clone(), rank),
                None => {
                    self.floors
                        .insert(update.id().node_id.clone(), (update.id().clone(), rank));
                }
            }
        }
    }

    /// foca forgot `node_id`, or may have changed its view of it without a
    /// packet: the next update about it goes through.
    pub(crate) fn forget(&mut self, node_id: &NodeId) {
        self.floors.remove(node_id);
    }
}
