//! QUIC between agents: one quinn endpoint per agent (server and client on
//! one UDP port), mutual TLS, a cache of outgoing connections with
//! keep-alive, SWIM datagrams in both directions.
//!
//! Every connection's peer is authenticated by the cluster CA, and its node
//! id is read from its certificate. Datagrams are handed to the node core
//! with that node id, so the core can refuse a packet that claims to come
//! from someone else. Outgoing datagrams go on a connection to the address
//! the core names, and only if the certificate there names the node the core
//! meant.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use shoal_membership::NodeId;
use tokio::sync::mpsc;

use crate::tls::{TlsIdentity, node_id_of};

/// Datagrams queued per peer while its connection is being set up; more are
/// dropped (SWIM tolerates loss; a peer that cannot be reached gets no queue).
pub const PENDING_DATAGRAMS_MAX: usize = 64;
/// Received datagrams waiting for the node core; more are dropped and counted.
pub const INBOUND_QUEUE_MAX: usize = 4_096;
/// Keep-alive interval of every connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// A connection silent this long is closed (and re-dialled on demand).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for a handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest peer message read from a stream, in bytes.
pub const STREAM_BYTES_MAX: usize = crate::core::messages::PEER_MESSAGE_BYTES_MAX;
/// Peer messages queued per destination; more are dropped (Raft retries).
pub const STREAM_QUEUE_MAX: usize = 1_024;

/// What arrived from an authenticated peer.
#[derive(Debug)]
pub enum Inbound {
    /// A SWIM datagram.
    Datagram {
        /// The node id in the sender's certificate.
        from: NodeId,
        /// The bytes.
        payload: Bytes,
    },
    /// A peer message, read whole from a unidirectional stream.
    Message {
        /// The node id in the sender's certificate.
        from: NodeId,
        /// The bytes.
        payload: Vec<u8>,
    },
}

/// A peer message that could not be sent (the core may need to know).
#[derive(Debug)]
pub struct SendFailure {
    /// The intended receiver.
    pub to: NodeId,
    /// Whether the message carried a Raft snapshot.
    pub carried_snapshot: bool,
}

/// A peer message sent whole (for snapshot delivery reports).
#[derive(Debug)]
pub struct SendReport {
    /// The receiver.
    pub to: NodeId,
    /// Whether it carried a Raft snapshot.
    pub carried_snapshot: bool,
    /// Whether it was written and finished.
    pub delivered: bool,
}

/// Counters of the transport, for `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct TransportStats {
    /// Handshakes that failed (bad certificate, timeout, refused).
    pub handshakes_failed: u64,
    /// Connections whose certificate named another node than expected.
    pub peer_mismatches: u64,
    /// Datagrams dropped before sending (no connection, queue full, too big).
    pub datagrams_unsent: u64,
    /// Received datagrams dropped because the core's queue was full.
    pub inbound_dropped: u64,
    /// Peer messages sent on streams.
    pub streams_sent: u64,
    /// Peer messages that could not be sent (no connection, queue full, reset).
    pub streams_failed: u64,
    /// Peer messages received on streams.
    pub streams_received: u64,
    /// Inbound streams refused (too large, reset, unreadable).
    pub streams_refused: u64,
}

enum Slot {
    Connecting(Vec<Bytes>),
    Ready(quinn::Connection),
}

/// A peer message waiting to be sent: receiver, bytes, carries a snapshot.
type QueuedMessage = (NodeId, Bytes, bool);

struct Inner {
    endpoint: quinn::Endpoint,
    /// Per-destination queues of peer messages, each drained by one task.
    senders: Mutex<BTreeMap<SocketAddr, mpsc::Sender<QueuedMessage>>>,
    reports: mpsc::Sender<SendReport>,
    /// Outgoing connections by the address dialled, with the node expected.
    slots: Mutex<BTreeMap<SocketAddr, (NodeId, Slot)>>,
    inbound: mpsc::Sender<Inbound>,
    stats: Mutex<TransportStats>,
}

/// The agent's QUIC endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

fn transport_config() -> quinn::TransportConfig {
    let mut config = quinn::TransportConfig::default();
    config.keep_alive_interval(Some(KEEP_ALIVE));
    config.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("small duration")));
    config.datagram_receive_buffer_size(Some(1 << 20));
    config
}

impl Transport {
    /// Binds `listen` and starts accepting connections. Datagrams from peers
    /// arrive on the returned receiver.
    pub fn bind(
        tls: &TlsIdentity,
        listen: SocketAddr,
    ) -> Result<(Self, mpsc::Receiver<Inbound>, mpsc::Receiver<SendReport>)> {
        let server_crypto =
            QuicServerConfig::try_from(tls.server_config()?).context("QUIC server config")?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(Arc::new(transport_config()));
        let client_crypto =
            QuicClientConfig::try_from(tls.client_config()?).context("QUIC client config")?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(Arc::new(transport_config()));
        let mut endpoint = quinn::Endpoint::server(server, listen)
            .with_context(|| format!("bind cluster.listen {listen}"))?;
        endpoint.set_default_client_config(client);
        let (sender, receiver) = mpsc::channel(INBOUND_QUEUE_MAX);
        let (reports, report_receiver) = mpsc::channel(INBOUND_QUEUE_MAX);
        let transport = Self {
            inner: Arc::new(Inner {
                endpoint,
                senders: Mutex::new(BTreeMap::new()),
                reports,
                slots: Mutex::new(BTreeMap::new()),
                inbound: sender,
                stats: Mutex::new(TransportStats::default()),
            }),
        };
        tokio::spawn(transport.clone().accept_loop());
        Ok((transport, receiver, report_receiver))
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.inner.endpoint.local_addr()?)
    }

    /// A copy of the counters.
    pub fn stats(&self) -> TransportStats {
        self.inner.stats.lock().expect("stats lock").clone()
    }

    fn count(&self, update: impl FnOnce(&mut TransportStats)) {
        update(&mut self.inner.stats.lock().expect("stats lock"));
    }

    async fn accept_loop(self) {
        while let Some(incoming) = self.inner.endpoint.accept().await {
            let transport = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                let connection = match tokio::time::timeout(CONNECT_TIMEOUT, incoming).await {
                    Ok(Ok(connection)) => connection,
                    Ok(Err(error)) => {
                        transport.count(|stats| stats.handshakes_failed += 1);
                        tracing::debug!(%remote, %error, "inbound handshake failed");
                        return;
                    }
                    Err(_) => {
                        transport.count(|stats| stats.handshakes_failed += 1);
                        return;
                    }
                };
                match peer_node_id(&connection) {
                    Ok(peer) => {
                        // A peer that dialled us is the freshest way to reach
                        // it (after a restart, our old connection is dead):
                        // send on this one from now on. Agents dial from
                        // their listening port, so the remote address is
                        // the address the core knows them by.
                        transport.adopt(remote, &peer, &connection);
                        transport.read_all(connection, peer).await
                    }
                    Err(error) => {
                        tracing::warn!(%remote, %error, "refusing peer");
                        connection.close(1u32.into(), b"bad certificate");
                    }
                }
            });
        }
    }

    /// Reads datagrams and unidirectional streams of a connection until it
    /// closes.
    async fn read_all(&self, connection: quinn::Connection, peer: NodeId) {
        let streams = self.clone();
        let stream_connection = connection.clone();
        let stream_peer = peer.clone();
        tokio::spawn(async move { streams.read_streams(stream_connection, stream_peer).await });
        while let Ok(payload) = connection.read_datagram().await {
            let inbound = Inbound::Datagram {
                from: peer.clone(),
                payload,
            };
            if self.inner.inbound.try_send(inbound).is_err() {
                self.count(|stats| stats.inbound_dropped += 1);
            }
        }
    }

    async fn read_streams(&self, connection: quinn::Connection, peer: NodeId) {
        while let Ok(mut stream) = connection.accept_uni().await {
            let transport = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move {
                match stream.read_to_end(STREAM_BYTES_MAX).await {
                    Ok(payload) => {
                        transport.count(|stats| stats.streams_received += 1);
                        // Streams carry Raft and replication: wait for room
                        // rather than drop (the queue is bounded; QUIC flow
                        // control pushes back on the sender meanwhile).
                        let _ = transport
                            .inner
                            .inbound
                            .send(Inbound::Message {
                                from: peer,
                                payload,
                            })
                            .await;
                    }
                    Err(error) => {
                        transport.count(|stats| stats.streams_refused += 1);
                        tracing::debug!(%error, "inbound stream refused");
                    }
                }
            });
        }
    }

    fn adopt(&self, addr: SocketAddr, peer: &NodeId, connection: &quinn::Connection) {
        let mut slots = self.inner.slots.lock().expect("slots lock");
        let pending = match slots.remove(&addr) {
            Some((expected, Slot::Connecting(pending))) if expected == *peer => pending,
            _ => Vec::new(),
        };
        for payload in pending {
            let _ = connection.send_datagram(payload);
        }
        slots.insert(addr, (peer.clone(), Slot::Ready(connection.clone())));
    }

    /// Drops the cached connection to `addr` (its node restarted or was
    /// declared down); the next datagram dials afresh.
    pub fn forget(&self, addr: SocketAddr) {
        let mut slots = self.inner.slots.lock().expect("slots lock");
        if let Some((_, Slot::Ready(_))) = slots.get(&addr) {
            slots.remove(&addr);
        }
    }

    /// Dials `addr`, checks the certificate, and returns the connection and
    /// the node id it names.
    pub async fn dial(&self, addr: SocketAddr) -> Result<(quinn::Connection, NodeId)> {
        let result = self.dial_once(addr).await;
        if result.is_err() {
            self.count(|stats| stats.handshakes_failed += 1);
        }
        result
    }

    async fn dial_once(&self, addr: SocketAddr) -> Result<(quinn::Connection, NodeId)> {
        // The server name is not used for verification (see tls.rs).
        let connecting = self
            .inner
            .endpoint
            .connect(addr, "shoal")
            .with_context(|| format!("dial {addr}"))?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| anyhow!("dial {addr}: handshake timed out"))?
            .with_context(|| format!("dial {addr}"))?;
        let peer = peer_node_id(&connection).with_context(|| format!("dial {addr}"))?;
        let reader = self.clone();
        let reading = connection.clone();
        let reading_peer = peer.clone();
        tokio::spawn(async move { reader.read_all(reading, reading_peer).await });
        Ok((connection, peer))
    }

    /// Sends a datagram to `node_id` at `addr`, dialling if needed. Never
    /// blocks: a datagram that cannot go now is queued briefly or dropped.
    pub fn send_datagram(&self, node_id: &NodeId, addr: SocketAddr, payload: Vec<u8>) {
        let payload = Bytes::from(payload);
        let mut slots = self.inner.slots.lock().expect("slots lock");
        match slots.get_mut(&addr) {
            Some((expected, Slot::Ready(connection)))
                if expected == node_id && connection.close_reason().is_none() =>
            {
                if let Err(error) = connection.send_datagram(payload) {
                    tracing::debug!(%addr, %error, "datagram not sent");
                    drop(slots);
                    self.count(|stats| stats.datagrams_unsent += 1);
                }
                return;
            }
            Some((expected, Slot::Connecting(pending))) if expected == node_id => {
                if pending.len() < PENDING_DATAGRAMS_MAX {
                    pending.push(payload);
                } else {
                    drop(slots);
                    self.count(|stats| stats.datagrams_unsent += 1);
                }
                return;
            }
            _ => {}
        }
        slots.insert(addr, (node_id.clone(), Slot::Connecting(vec![payload])));
        drop(slots);
        let transport = self.clone();
        let node_id = node_id.clone();
        tokio::spawn(async move { transport.connect_slot(node_id, addr).await });
    }

    async fn connect_slot(&self, expected: NodeId, addr: SocketAddr) {
        let result = self.dial(addr).await;
        let mut slots = self.inner.slots.lock().expect("slots lock");
        let pending = match slots.remove(&addr) {
            Some((_, Slot::Connecting(pending))) => pending,
            Some(other) => {
                slots.insert(addr, other);
                Vec::new()
            }
            None => Vec::new(),
        };
        match result {
            Ok((connection, peer)) if peer == expected => {
                for payload in pending {
                    let _ = connection.send_datagram(payload);
                }
                slots.insert(addr, (expected, Slot::Ready(connection)));
            }
            Ok((connection, peer)) => {
                drop(slots);
                tracing::warn!(%addr, %expected, found = %peer, "peer certificate names another node");
                connection.close(2u32.into(), b"unexpected node");
                self.count(|stats| {
                    stats.peer_mismatches += 1;
                    stats.datagrams_unsent += pending.len() as u64;
                });
            }
            Err(error) => {
                drop(slots);
                tracing::debug!(%addr, error = format!("{error:#}"), "dial failed");
                self.count(|stats| stats.datagrams_unsent += pending.len() as u64);
            }
        }
    }

    /// Queues a peer message for `node_id` at `addr`; it goes on its own
    /// unidirectional stream, in order with the other messages for that
    /// address. Never blocks; a full queue drops the message (and reports it).
    pub fn send_message(
        &self,
        node_id: &NodeId,
        addr: SocketAddr,
        payload: Bytes,
        carries_snapshot: bool,
    ) {
        let mut senders = self.inner.senders.lock().expect("senders lock");
        let sender = senders.entry(addr).or_insert_with(|| {
            let (sender, receiver) = mpsc::channel(STREAM_QUEUE_MAX);
            tokio::spawn(self.clone().stream_sender(addr, receiver));
            sender
        });
        if sender
            .try_send((node_id.clone(), payload, carries_snapshot))
            .is_err()
        {
            drop(senders);
            self.count(|stats| stats.streams_failed += 1);
            let _ = self.inner.reports.try_send(SendReport {
                to: node_id.clone(),
                carried_snapshot: carries_snapshot,
                delivered: false,
            });
        }
    }

    async fn stream_sender(self, addr: SocketAddr, mut queue: mpsc::Receiver<QueuedMessage>) {
        while let Some((node_id, payload, carries_snapshot)) = queue.recv().await {
            let delivered = match self.write_stream(&node_id, addr, &payload).await {
                Ok(()) => {
                    self.count(|stats| stats.streams_sent += 1);
                    true
                }
                Err(error) => {
                    tracing::debug!(%addr, to = %node_id, error = format!("{error:#}"), "peer message not sent");
                    self.count(|stats| stats.streams_failed += 1);
                    self.forget(addr);
                    false
                }
            };
            if carries_snapshot || !delivered {
                let _ = self.inner.reports.try_send(SendReport {
                    to: node_id,
                    carried_snapshot: carries_snapshot,
                    delivered,
                });
            }
        }
    }

    async fn write_stream(&self, node_id: &NodeId, addr: SocketAddr, payload: &[u8]) -> Result<()> {
        let connection = self.connection(node_id, addr).await?;
        let mut stream = connection.open_uni().await.context("open stream")?;
        stream.write_all(payload).await.context("write stream")?;
        stream.finish().context("finish stream")?;
        Ok(())
    }

    /// A live connection to `node_id` at `addr`: the cached one, or a new one.
    async fn connection(&self, node_id: &NodeId, addr: SocketAddr) -> Result<quinn::Connection> {
        {
            let slots = self.inner.slots.lock().expect("slots lock");
            if let Some((expected, Slot::Ready(connection))) = slots.get(&addr)
                && expected == node_id
                && connection.close_reason().is_none()
            {
                return Ok(connection.clone());
            }
        }
        let (connection, peer) = self.dial(addr).await?;
        if peer != *node_id {
            connection.close(2u32.into(), b"unexpected node");
            self.count(|stats| stats.peer_mismatches += 1);
            anyhow::bail!("{addr} is {peer}, not {node_id}");
        }
        self.adopt(addr, &peer, &connection);
        Ok(connection)
    }

    /// Closes every connection and waits (bounded) for them to be
    /// acknowledged, so datagrams sent just before are on the wire.
    pub async fn shutdown(&self) {
        let connections: Vec<quinn::Connection> = {
            let slots = self.inner.slots.lock().expect("slots lock");
            slots
                .values()
                .filter_map(|(_, slot)| match slot {
                    Slot::Ready(connection) => Some(connection.clone()),
                    Slot::Connecting(_) => None,
                })
                .collect()
        };
        for connection in connections {
            connection.close(0u32.into(), b"leaving");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }
}

/// The node id named by the certificate a connection's peer presented.
fn peer_node_id(connection: &quinn::Connection) -> Result<NodeId> {
    let identity = connection
        .peer_identity()
        .ok_or_else(|| anyhow!("peer presented no certificate"))?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| anyhow!("unexpected peer identity type"))?;
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow!("empty certificate chain"))?;
    node_id_of(leaf)
}
