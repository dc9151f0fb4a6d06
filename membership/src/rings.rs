//! Probe rings: which member this node probes in each probe period.
//!
//! foca shuffles every member's probe order on its own, so the wait for a
//! crashed member's first probe is close to exponential: a mean of one probe
//! period at any cluster size, but over 30 crashes at 1,000 agents the
//! slowest waited 2–3 s, the tail of the detection time (BENCHMARKS.md).
//!
//! Instead, every member is placed on [`RINGS`] rings by hashing its node id
//! with the ring's number, and in probe period `s` (counted on the wall
//! clock, so that agents count alike) a member probes its successor on ring
//! `s mod RINGS`. Members that agree on who is active agree on the rings, so
//! in every period each member is probed by about one member (exactly one
//! when every agent's timer fires once in the period), its predecessor on
//! that period's ring: a crash is probed within one period, and the periods
//! after it bring accusations from other predecessors. Each member has up to
//! `RINGS` observers, chosen by hash, not by name or zone. A view that
//! differs (a join not heard yet) changes only the successors next to the
//! member it differs by, where one shared shuffle of everyone would shift
//! every member after it. This is the K-ring monitoring of Rapid (Suresh et
//! al., "Stable and Consistent Membership at Scale with Rapid", 2018) used
//! only to pick SWIM's probe targets.

use std::hash::Hasher;

use crate::NodeId;
use crate::summary::fmix64;

/// Rings, and so observers of each member and members each one probes in
/// turn. Rapid uses 10; 8 keeps a member's observers independent enough
/// (a false suspicion needs several of them to fail) while each member
/// still probes one target every period.
pub const RINGS: usize = 8;

/// This node's successor on each ring, among the members it holds active.
#[derive(Clone, Debug)]
pub(crate) struct ProbeRings {
    /// This node's place on each ring.
    own: [u64; RINGS],
    /// On each ring, the nearest active member clockwise: its distance
    /// from this node and its node id.
    successors: [Option<(u64, NodeId)>; RINGS],
}

impl ProbeRings {
    /// Rings with only `own` on them.
    pub(crate) fn new(own: &NodeId) -> Self {
        Self {
            own: places(own),
            successors: Default::default(),
        }
    }

    /// `member` became active.
    pub(crate) fn join(&mut self, member: &NodeId) {
        for (ring, place) in places(member).into_iter().enumerate() {
            self.offer(ring, place, member);
        }
    }

    /// `member` is no longer active; `active` are the other members that
    /// are (not this node). A ring whose successor left finds the next one
    /// among them.
    pub(crate) fn leave<'a>(
        &mut self,
        member: &NodeId,
        active: impl IntoIterator<Item = &'a NodeId>,
    ) {
        let mut vacant = [false; RINGS];
        for (ring, successor) in self.successors.iter_mut().enumerate() {
            if successor.as_ref().is_some_and(|(_, id)| id == member) {
                *successor = None;
                vacant[ring] = true;
            }
        }
        if !vacant.contains(&true) {
            return;
        }
        for id in active {
            if id == member {
                continue;
            }
            let places = places(id);
            for ring in (0..RINGS).filter(|ring| vacant[*ring]) {
                self.offer(ring, places[ring], id);
            }
        }
    }

    /// Makes `member`, at `place` on `ring`, this node's successor there if
    /// it is nearer clockwise than the one held (ties: the smaller id).
    fn offer(&mut self, ring: usize, place: u64, member: &NodeId) {
        let distance = place.wrapping_sub(self.own[ring]);
        let successor = &mut self.successors[ring];
        if successor
            .as_ref()
            .is_none_or(|(best, best_id)| (distance, member) < (*best, best_id))
        {
            *successor = Some((distance, member.clone()));
        }
    }

    /// The member to probe in probe period `slot`, if any is active.
    pub(crate) fn target(&self, slot: u64) -> Option<&NodeId> {
        let ring = (slot % RINGS as u64) as usize;
        self.successors[ring].as_ref().map(|(_, id)| id)
    }
}

/// A member's place on each ring: its node id hashed (FNV-1a, stable across
/// builds and machines), mixed with the ring's number and put through a
/// finalizer, so that node ids that differ in one character land far apart.
fn places(member: &NodeId) -> [u64; RINGS] {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(member.as_str().as_bytes());
    let base = hasher.finish();
    std::array::from_fn(|ring| fmix64(base ^ (ring as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn ids(count: usize) -> Vec<NodeId> {
        (0..count)
            .map(|n| NodeId::new(format!("db-{n:03}")).unwrap())
            .collect()
    }

    /// Every member's rings, as each would hold them with `active` (all of
    /// `ids` but `missing`) its view.
    fn rings_of(ids: &[NodeId], missing: &[&NodeId]) -> BTreeMap<NodeId, ProbeRings> {
        let active: Vec<&NodeId> = ids.iter().filter(|id| !missing.contains(id)).collect();
        active
            .iter()
            .map(|own| {
                let mut rings = ProbeRings::new(own);
                for member in active.iter().filter(|member| *member != own) {
                    rings.join(member);
                }
                ((*own).clone(), rings)
            })
            .collect()
    }

    /// How many members probe each member in `slot`.
    fn probers(rings: &BTreeMap<NodeId, ProbeRings>, slot: u64) -> BTreeMap<NodeId, usize> {
        let mut count = BTreeMap::new();
        for ring in rings.values() {
            *count.entry(ring.target(slot).unwrap().clone()).or_default() += 1;
        }
        count
    }

    #[test]
    fn in_every_period_each_member_is_probed_once() {
        let ids = ids(50);
        let rings = rings_of(&ids, &[]);
        for slot in 0..RINGS as u64 {
            let count = probers(&rings, slot);
            assert_eq!(count.len(), ids.len(), "slot {slot}: some member unprobed");
            assert!(count.values().all(|probes| *probes == 1), "slot {slot}");
        }
        // Each member probes different members in turn (its successors on
        // the rings), not the same one every period.
        let own = &rings[&ids[0]];
        let targets: std::collections::BTreeSet<&NodeId> = (0..RINGS as u64)
            .filter_map(|slot| own.target(slot))
            .collect();
        assert!(targets.len() > RINGS / 2, "{targets:?}");
    }

    #[test]
    fn leaving_hands_the_successor_on_and_joining_takes_it_back() {
        let ids = ids(30);
        let full = rings_of(&ids, &[]);
        let gone = &ids[7];
        let without = rings_of(&ids, &[gone]);
        for own in ids.iter().filter(|id| *id != gone) {
            // Built up with `gone` and then told it left, or built without
            // it: the same successors.
            let mut rings = full[own].clone();
            rings.leave(gone, ids.iter().filter(|id| *id != own));
            for slot in 0..RINGS as u64 {
                assert_eq!(
                    rings.target(slot),
                    without[own].target(slot),
                    "{own} {slot}"
                );
            }
            rings.join(gone);
            for slot in 0..RINGS as u64 {
                assert_eq!(rings.target(slot), full[own].target(slot), "{own} {slot}");
            }
        }
    }

    #[test]
    fn a_view_that_differs_by_one_member_moves_few_probes() {
        // Half the members have not heard of `late` yet: in each period,
        // `late` itself and at most one other member are probed by a
        // number other than one.
        let ids = ids(40);
        let late = ids[11].clone();
        let with = rings_of(&ids, &[]);
        let without = rings_of(&ids, &[&late]);
        for slot in 0..RINGS as u64 {
            let mixed: BTreeMap<NodeId, ProbeRings> = ids
                .iter()
                .enumerate()
                .filter(|(_, id)| **id != late)
                .map(|(n, id)| {
                    let view = if n % 2 == 0 { &with } else { &without };
                    (id.clone(), view[id].clone())
                })
                .chain([(late.clone(), with[&late].clone())])
                .collect();
            let count = probers(&mixed, slot);
            let off = ids
                .iter()
                .filter(|id| count.get(*id).copied().unwrap_or(0) != 1)
                .count();
            assert!(off <= 2, "slot {slot}: {off} members not probed once");
        }
    }

    #[test]
    fn alone_there_is_nobody_to_probe() {
        let ids = ids(2);
        let mut rings = ProbeRings::new(&ids[0]);
        assert_eq!(rings.target(0), None);
        rings.join(&ids[1]);
        assert!((0..RINGS as u64).all(|slot| rings.target(slot) == Some(&ids[1])));
        rings.leave(&ids[1], [&ids[1]]);
        assert_eq!(rings.target(3), None);
    }
}
