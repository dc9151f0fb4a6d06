//! The tokio shell around the node core: real time, QUIC, sled, HTTP,
//! signals. It owns all IO and hands the core `now` with every input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use shoal_membership::{Event, Identity, MemberMeta, MemberView};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::core::NodeCore;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tls::TlsIdentity;
use crate::transport::Transport;

/// Queries the HTTP API asks the core loop.
#[derive(Debug)]
pub enum Query {
    /// The member table.
    Members(oneshot::Sender<Vec<MemberView>>),
    /// Publish the core's counters to the metrics registry, then reply.
    PublishMetrics(oneshot::Sender<()>),
}

/// Queued HTTP queries; more wait in axum (the handler awaits a slot).
pub const QUERY_QUEUE_MAX: usize = 256;
/// How long a seed is retried at most between attempts.
pub const SEED_RETRY_MAX: Duration = Duration::from_secs(10);

/// What the HTTP layer needs from a running agent.
#[derive(Clone, Debug)]
pub struct Handle {
    /// Ask the core loop.
    pub queries: mpsc::Sender<Query>,
    /// This agent's identity at start.
    pub identity: Identity,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Start time, for uptime.
    pub started: Instant,
}

/// Runs the agent until SIGINT or SIGTERM, then leaves the cluster.
pub async fn run(config: Config) -> Result<()> {
    let tls = TlsIdentity::load(&config.tls_ca, &config.tls_cert, &config.tls_key)?;
    if tls.node_id != config.node_id {
        bail!(
            "tls.cert: certificate {} is for node {:?}, but node_id is {:?}",
            config.tls_cert.display(),
            tls.node_id.as_str(),
            config.node_id.as_str()
        );
    }
    let store = Store::open(&config.data_dir)?;
    let generation = store.bump_generation()?;
    let identity = Identity {
        node_id: config.node_id.clone(),
        addr: config.advertise,
        generation,
        rejoin: 0,
        meta: MemberMeta {
            role: config.role,
            labels: config.labels.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
    };
    let _span =
        tracing::info_span!("agent", node = %identity.node_id, generation = generation.0).entered();
    let started = Instant::now();
    let now = || started.elapsed();
    // The only randomness in the core derives from this seed.
    let rng_seed = u64::from_le_bytes(rand_seed());
    let mut core = NodeCore::new(identity.clone(), config.membership.clone(), rng_seed, now())
        .context("membership")?;

    let (transport, mut inbound) = Transport::bind(&tls, config.listen)?;
    let metrics = Arc::new(Metrics::install()?);
    let (query_tx, mut queries) = mpsc::channel(QUERY_QUEUE_MAX);
    let handle = Handle {
        queries: query_tx,
        identity: identity.clone(),
        metrics: metrics.clone(),
        started,
    };
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("http.listen: bind {}", config.http_listen))?;
    tokio::spawn(crate::http::serve(listener, handle));
    tracing::info!(
        listen = %config.listen, advertise = %config.advertise, http = %config.http_listen,
        role = %config.role, "agent started"
    );

    let (seed_tx, mut seeds) = mpsc::channel(config.seeds.len().max(1));
    for seed in config
        .seeds
        .iter()
        .copied()
        .filter(|seed| *seed != config.advertise)
    {
        tokio::spawn(resolve_seed(transport.clone(), seed, seed_tx.clone()));
    }
    drop(seed_tx);

    let mut shutdown = Box::pin(shutdown_signal());
    loop {
        let deadline = core.poll_timeout().map(|at| started + at);
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(datagram) = inbound.recv() => {
                core.handle_datagram(now(), Some(&datagram.from), &datagram.payload);
                // Drain what is already queued before timers run, so a node
                // waking from a stall sees the acks that did arrive.
                while let Ok(datagram) = inbound.try_recv() {
                    core.handle_datagram(now(), Some(&datagram.from), &datagram.payload);
                }
            }
            _ = sleep => core.handle_timeout(now()),
            Some((node_id, addr)) = seeds.recv() => core.add_seed(now(), node_id, addr),
            Some(query) = queries.recv() => match query {
                Query::Members(reply) => { let _ = reply.send(core.members()); }
                Query::PublishMetrics(reply) => {
                    metrics.publish(&core, &transport.stats());
                    let _ = reply.send(());
                }
            },
        }
        flush(&mut core, &transport);
    }
    tracing::info!("leaving the cluster");
    core.leave(now());
    flush(&mut core, &transport);
    transport.shutdown().await;
    Ok(())
}

fn flush(core: &mut NodeCore, transport: &Transport) {
    while let Some(transmit) = core.poll_transmit() {
        transport.send_datagram(&transmit.node_id, transmit.addr, transmit.payload);
    }
    while let Some(event) = core.poll_event() {
        match event {
            Event::MemberUp(member) => {
                tracing::info!(member = %member.node_id, generation = member.generation.0, "member up")
            }
            Event::MemberDown(member) => {
                tracing::warn!(member = %member.node_id, generation = member.generation.0, "member down");
                transport.forget(member.addr);
            }
            Event::Renamed { old, new } => {
                tracing::info!(
                    member = %new.node_id, old = old.generation.0, new = new.generation.0, "member restarted"
                );
                transport.forget(old.addr);
                transport.forget(new.addr);
            }
            Event::Defunct => tracing::warn!("the cluster declared this node down; rejoining"),
            other => tracing::debug!(event = ?other, "membership"),
        }
    }
}

/// Dials a seed address until its certificate tells us its node id.
async fn resolve_seed(
    transport: Transport,
    addr: std::net::SocketAddr,
    found: mpsc::Sender<(shoal_membership::NodeId, std::net::SocketAddr)>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match transport.dial(addr).await {
            Ok((_connection, node_id)) => {
                tracing::debug!(%addr, seed = %node_id, "seed resolved");
                let _ = found.send((node_id, addr)).await;
                return;
            }
            Err(error) => {
                tracing::debug!(%addr, error = format!("{error:#}"), "seed not reachable yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(SEED_RETRY_MAX);
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// 8 bytes of OS randomness for the core's RNG seed (the shell may read the
/// OS; the core may not).
fn rand_seed() -> [u8; 8] {
    let mut seed = [0u8; 8];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut seed)
        .expect("OS randomness");
    seed
}
