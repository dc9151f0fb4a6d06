//! End-to-end check of the foca glue: three real `foca::Foca` instances on a
//! virtual network carry telemetry deltas as custom broadcasts, with a
//! `BroadcastHandler` that is the few lines the agent needs
//! ([`TelemetryStore::receive_delta`] behind shared state, since foca owns
//! its handler). No anti-entropy runs here, so convergence is by broadcasts
//! alone.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BufMut};
use foca::{AccumulatingRuntime, BroadcastHandler, Codec, Config, Foca, Header, Member, Timer};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use shoal_membership::telemetry::{
    DeltaSource, HostMetrics, TelemetryAction, TelemetryConfig, TelemetryError, TelemetryKey,
    TelemetryStore,
};
use shoal_membership::{Generation, NodeId};

/// MessagePack codec for foca's own messages (the real one lives in the
/// SWIM part of the crate; this keeps the test independent of it).
struct MsgpackCodec;

#[derive(Debug)]
struct CodecError(String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

fn put(value: &impl serde::Serialize, mut buf: impl BufMut) -> Result<(), CodecError> {
    let bytes = rmp_serde::to_vec(value).map_err(|error| CodecError(error.to_string()))?;
    if buf.remaining_mut() < bytes.len() {
        return Err(CodecError("buffer full".to_owned()));
    }
    buf.put_slice(&bytes);
    Ok(())
}

impl Codec<SocketAddr> for MsgpackCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<SocketAddr>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<SocketAddr>, CodecError> {
        rmp_serde::from_read(buf.reader()).map_err(|error| CodecError(error.to_string()))
    }

    fn encode_member(
        &mut self,
        member: &Member<SocketAddr>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<SocketAddr>, CodecError> {
        rmp_serde::from_read(buf.reader()).map_err(|error| CodecError(error.to_string()))
    }
}

/// The agent's whole foca glue: hand every custom broadcast to the store.
struct TelemetryBroadcasts {
    store: Rc<RefCell<TelemetryStore>>,
    now: Rc<Cell<Duration>>,
}

impl BroadcastHandler<SocketAddr> for TelemetryBroadcasts {
    type Key = TelemetryKey;
    type Error = TelemetryError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&SocketAddr>,
    ) -> Result<Option<TelemetryKey>, TelemetryError> {
        self.store
            .borrow_mut()
            .receive_delta(self.now.get(), data, DeltaSource::from(sender))
    }
}

type Node = Foca<SocketAddr, MsgpackCodec, ChaCha8Rng, TelemetryBroadcasts>;

enum Event {
    Data(Vec<u8>),
    Timer(Timer<SocketAddr>),
    Telemetry,
}

struct Sim {
    now: Rc<Cell<Duration>>,
    nodes: Vec<Node>,
    stores: Vec<Rc<RefCell<TelemetryStore>>>,
    addrs: Vec<SocketAddr>,
    /// (due, sequence number for a stable order) → (node index, event)
    queue: BTreeMap<(Duration, u64), (usize, Event)>,
    sequence: u64,
}

impl Sim {
    fn schedule(&mut self, after: Duration, node: usize, event: Event) {
        self.sequence += 1;
        self.queue
            .insert((self.now.get() + after, self.sequence), (node, event));
    }

    fn drain(&mut self, node: usize, mut runtime: AccumulatingRuntime<SocketAddr>) {
        while let Some((to, data)) = runtime.to_send() {
            let target = self.addrs.iter().position(|addr| *addr == to).unwrap();
            self.schedule(Duration::from_millis(1), target, Event::Data(data.to_vec()));
        }
        while let Some((after, timer)) = runtime.to_schedule() {
            self.schedule(after, node, Event::Timer(timer));
        }
        while runtime.to_notify().is_some() {}
    }

    fn step(&mut self) -> bool {
        let Some(((due, _), (node, event))) = self.queue.pop_first() else {
            return false;
        };
        self.now.set(due);
        let mut runtime = AccumulatingRuntime::new();
        match event {
            Event::Data(bytes) => {
                // Errors are per-packet operating conditions; drop them.
                let _ = self.nodes[node].handle_data(&bytes, &mut runtime);
            }
            Event::Timer(timer) => {
                let _ = self.nodes[node].handle_timer(timer, &mut runtime);
            }
            Event::Telemetry => {
                let actions = self.stores[node].borrow_mut().handle_timeout(due);
                for action in actions {
                    if let TelemetryAction::Broadcast(delta) = action {
                        self.nodes[node].add_broadcast(&delta.bytes).unwrap();
                        // Push it out now instead of waiting to piggyback
                        // on the next probe.
                        self.nodes[node].broadcast(&mut runtime).unwrap();
                    }
                }
                let next = self.stores[node].borrow().poll_timeout();
                self.schedule(next.saturating_sub(due), node, Event::Telemetry);
            }
        }
        self.drain(node, runtime);
        true
    }
}

#[test]
fn deltas_spread_through_foca_custom_broadcasts() {
    let now = Rc::new(Cell::new(Duration::ZERO));
    let names = ["db-1", "db-2", "db-3"];
    let addrs: Vec<SocketAddr> = (1..=3)
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .collect();
    let mut nodes = Vec::new();
    let mut stores = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let mut store = TelemetryStore::new(
            TelemetryConfig::default(),
            NodeId::new(*name).unwrap(),
            Generation(1),
            "test",
            Duration::ZERO,
        )
        .unwrap();
        store
            .set_host_metrics(HostMetrics {
                cpu_percent: 10.0 * (index + 1) as f64,
                memory_used_bytes: 1,
                memory_total_bytes: 2,
                disk_used_bytes: 1,
                disk_capacity_bytes: 2,
            })
            .unwrap();
        let store = Rc::new(RefCell::new(store));
        let mut config = Config::new_lan(NonZeroU32::new(3).unwrap());
        config.max_packet_size = 1150.try_into().unwrap();
        nodes.push(Foca::with_custom_broadcast(
            addrs[index],
            config,
            ChaCha8Rng::seed_from_u64(index as u64),
            MsgpackCodec,
            TelemetryBroadcasts {
                store: Rc::clone(&store),
                now: Rc::clone(&now),
            },
        ));
        stores.push(store);
    }
    let mut sim = Sim {
        now,
        nodes,
        stores,
        addrs: addrs.clone(),
        queue: BTreeMap::new(),
        sequence: 0,
    };
    for node in 0..3 {
        sim.schedule(Duration::ZERO, node, Event::Telemetry);
    }
    for node in 1..3 {
        let mut runtime = AccumulatingRuntime::new();
        sim.nodes[node].announce(addrs[0], &mut runtime).unwrap();
        sim.drain(node, runtime);
    }
    while sim.now.get() < Duration::from_secs(30) && sim.step() {}

    for store in &sim.stores {
        let store = store.borrow();
        assert_eq!(
            store.map().len(),
            3,
            "{} sees {:?}",
            store.node_id(),
            store.map()
        );
        // Every first record spread by broadcasts alone (no anti-entropy
        // exchange ran); later heartbeats are anti-entropy's job.
        assert_eq!(store.counters().anti_entropy_messages, 0);
    }
}
