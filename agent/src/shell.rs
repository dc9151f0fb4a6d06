//! The tokio shell around the node core: real time, QUIC, sled, HTTP,
//! signals. It owns all IO and hands the core `now` with every input.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use shoal_consensus::{
    Catalog, CatalogIndex, Command, PendingSync, RequestId, SledStorage, SyncTicket,
};
use shoal_membership::telemetry::DatabaseReport;
use shoal_membership::{Event, Identity, MemberMeta, MemberView, NodeId};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::core::messages::{SeedChange, SubmitOutcome};
use crate::core::{Completion, NodeCore, NodeCoreConfig, SeedStatus};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tls::TlsIdentity;
use crate::transport::{Inbound, Transport};

/// The node core as the agent runs it: on the sled log store.
pub type AgentCore = NodeCore<SledStorage>;

/// What a read query sees: the local catalog and how fresh it is, and the
/// core itself for everything else (members, telemetry, alerts).
#[derive(Debug)]
pub struct View<'a> {
    /// The node core.
    pub core: &'a AgentCore,
    /// Its monotonic `now`.
    pub now: Duration,
    /// The local catalog.
    pub catalog: &'a Catalog,
    /// How stale it may be (`None`: never confirmed by a seed).
    pub staleness: Option<Duration>,
    /// The seed group as this agent sees it.
    pub seeds: SeedStatus,
}

/// A function run on the core loop against the local catalog.
pub type ReadFn = Box<dyn FnOnce(&View<'_>) + Send>;

/// Queries the HTTP API asks the core loop.
pub enum Query {
    /// The member table.
    Members(oneshot::Sender<Vec<MemberView>>),
    /// Publish the core's counters to the metrics registry, then reply.
    PublishMetrics(oneshot::Sender<()>),
    /// Run a function against the local catalog.
    Read(ReadFn),
    /// Submit a write; the reply comes once it applied locally (or failed).
    Submit(Command, oneshot::Sender<SubmitOutcome>),
    /// Ask the leader for a seed-group change.
    ChangeSeeds(RequestId, SeedChange, oneshot::Sender<SubmitOutcome>),
    /// A linearizable read barrier.
    ReadBarrier(oneshot::Sender<Result<CatalogIndex, String>>),
    /// What the local database reports; the error names the bad field.
    DatabaseReport(DatabaseReport, oneshot::Sender<Result<(), String>>),
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Query::Members(_) => "Members",
            Query::PublishMetrics(_) => "PublishMetrics",
            Query::Read(_) => "Read",
            Query::Submit(..) => "Submit",
            Query::ChangeSeeds(..) => "ChangeSeeds",
            Query::ReadBarrier(_) => "ReadBarrier",
            Query::DatabaseReport(..) => "DatabaseReport",
        })
    }
}

/// Queued HTTP queries; more wait in axum (the handler awaits a slot).
pub const QUERY_QUEUE_MAX: usize = 1_024;
/// Most queries taken in one turn of the loop (one Raft batch).
pub const QUERY_BATCH_MAX: usize = 1_024;
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
    /// Whether writes need a token.
    pub acl_enabled: bool,
}

/// Milliseconds since the Unix epoch, from the OS clock (the shell may read it).
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
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
        meta: std::sync::Arc::new(MemberMeta {
            role: config.role,
            labels: config.labels.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }),
    };
    let _span =
        tracing::info_span!("agent", node = %identity.node_id, generation = generation.0).entered();
    let started = Instant::now();
    let now = || started.elapsed();
    let storage = SledStorage::open(
        store.db().clone(),
        &config.data_dir.join(crate::store::SLED_DIR),
        &config.data_dir.join("raft-snapshots"),
    )
    .context("open the raft log in data_dir")?
    // Syncs run on their own thread (below) while the loop goes on.
    .sync_in_background(true);
    let mut core_config = NodeCoreConfig::new(
        identity.clone(),
        config.membership.clone(),
        config.bootstrap_expect as usize,
    );
    core_config.wall_base_unix_ms = wall_clock_ms();
    core_config.alerts = config.alerts.clone();
    // The only randomness in the core derives from this seed.
    let rng_seed = u64::from_le_bytes(rand_seed());
    let mut core = NodeCore::new(core_config, storage, rng_seed, now()).context("node core")?;

    let (transport, mut inbound, mut reports) = Transport::bind(&tls, config.listen)?;
    let metrics = Arc::new(Metrics::install()?);
    let (query_tx, mut queries) = mpsc::channel(QUERY_QUEUE_MAX);
    let handle = Handle {
        queries: query_tx,
        identity: identity.clone(),
        metrics: metrics.clone(),
        started,
        acl_enabled: config.acl_enabled,
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

    let (syncer, mut synced) = Syncer::start()?;
    let mut waiting = Waiting::default();
    let mut host = crate::host::HostSampler::new(&config.data_dir);
    let mut host_interval = tokio::time::interval(config.membership.telemetry.refresh_interval);
    host_interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            Some((ticket, result)) = synced.recv() => core.finish_sync(now(), ticket, result),
            Some(first) = inbound.recv() => {
                // Drain what is already queued before timers run, so a node
                // waking from a stall sees the acks that did arrive.
                let mut next = Some(first);
                while let Some(item) = next {
                    match item {
                        Inbound::Datagram { from, payload } => core.handle_datagram(now(), Some(&from), &payload),
                        Inbound::Message { from, payload } => core.handle_message(now(), &from, &payload),
                    }
                    next = inbound.try_recv().ok();
                }
            }
            _ = sleep => core.handle_timeout(now()),
            Some(report) = reports.recv() => {
                if report.carried_snapshot
                    && let Ok(to) = shoal_consensus::NodeId::new(report.to.as_str())
                {
                    core.report_snapshot(now(), &to, report.delivered);
                }
            }
            Some((node_id, addr)) = seeds.recv() => core.add_seed(now(), node_id, addr),
            _ = host_interval.tick() => {
                if let Err(error) = core.set_host_metrics(host.sample()) {
                    tracing::warn!(%error, "host metrics refused");
                }
            }
                        Some(query) = queries.recv() => {
                // Take every query already waiting, so concurrent writes
                // become one Raft batch (one fsync) at the flush below.
                waiting.answer(&mut core, &transport, &metrics, query, now());
                for _ in 0..QUERY_BATCH_MAX {
                    let Ok(query) = queries.try_recv() else { break };
                    waiting.answer(&mut core, &transport, &metrics, query, now());
                }
            }
        }
        flush(&mut core, &transport, &mut waiting);
        if let Some(sync) = core.take_sync() {
            syncer.run(sync);
        }
    }
    tracing::info!("leaving the cluster");
    core.leave(now());
    flush(&mut core, &transport, &mut waiting);
    // Let a running sync finish before the process ends.
    if let Some((ticket, result)) = syncer.wait(&mut synced).await {
        core.finish_sync(now(), ticket, result);
    }
    transport.shutdown().await;
    Ok(())
}

/// The thread that runs the Raft log's syncs (`fdatasync`), one at a time, so the
/// event loop keeps taking messages and requests meanwhile; what arrives during
/// one sync is covered by the next.
struct Syncer {
    jobs: std::sync::mpsc::Sender<PendingSync>,
}

type SyncDone = (SyncTicket, Result<(), shoal_consensus::Error>);

impl Syncer {
    fn start() -> Result<(Syncer, mpsc::UnboundedReceiver<SyncDone>)> {
        let (jobs, job_rx) = std::sync::mpsc::channel::<PendingSync>();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("raft-sync".into())
            .spawn(move || {
                for sync in job_rx {
                    let result = sync.job.run();
                    if done_tx.send((sync.ticket, result)).is_err() {
                        return;
                    }
                }
            })
            .context("start the raft sync thread")?;
        Ok((Syncer { jobs }, done_rx))
    }

    fn run(&self, sync: PendingSync) {
        // The thread ends only when this sender is dropped.
        let _ = self.jobs.send(sync);
    }

    /// The result of the sync still running, if any.
    async fn wait(self, done: &mut mpsc::UnboundedReceiver<SyncDone>) -> Option<SyncDone> {
        drop(self.jobs);
        done.recv().await
    }
}

/// Clients waiting on the core, by what they wait for.
#[derive(Default)]
struct Waiting {
    writes: BTreeMap<RequestId, (Instant, Vec<oneshot::Sender<SubmitOutcome>>)>,
    reads: BTreeMap<u64, oneshot::Sender<Result<CatalogIndex, String>>>,
}

impl Waiting {
    fn answer(
        &mut self,
        core: &mut AgentCore,
        transport: &Transport,
        metrics: &Metrics,
        query: Query,
        now: Duration,
    ) {
        match query {
            Query::Members(reply) => {
                let _ = reply.send(core.members());
            }
            Query::PublishMetrics(reply) => {
                metrics.publish(core, &transport.stats());
                let _ = reply.send(());
            }
            Query::Read(read) => {
                let view = View {
                    core,
                    now,
                    catalog: core.catalog(),
                    staleness: core.catalog_staleness(),
                    seeds: core.seed_status(),
                };
                read(&view);
            }
            Query::Submit(command, reply) => {
                let request_id = command.request_id.clone();
                self.writes
                    .entry(request_id)
                    .or_insert_with(|| (Instant::now(), Vec::new()))
                    .1
                    .push(reply);
                core.submit(now, command);
            }
            Query::ChangeSeeds(request_id, change, reply) => {
                self.writes
                    .entry(request_id.clone())
                    .or_insert_with(|| (Instant::now(), Vec::new()))
                    .1
                    .push(reply);
                core.change_seeds(now, request_id, change);
            }
            Query::ReadBarrier(reply) => {
                let id = core.read_barrier(now);
                self.reads.insert(id, reply);
            }
            Query::DatabaseReport(report, reply) => {
                let _ = reply.send(
                    core.set_database_report(now, report)
                        .map_err(|error| error.to_string()),
                );
            }
        }
    }

    fn complete(&mut self, completion: Completion) {
        match completion {
            Completion::Submitted {
                request_id,
                outcome,
            } => {
                if let Some((started, replies)) = self.writes.remove(&request_id) {
                    metrics::histogram!("shoal_proposal_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    for reply in replies {
                        let _ = reply.send(outcome.clone());
                    }
                }
            }
            Completion::Read { id, result } => {
                if let Some(reply) = self.reads.remove(&id) {
                    let _ = reply.send(result);
                }
            }
        }
    }
}

fn flush(core: &mut AgentCore, transport: &Transport, waiting: &mut Waiting) {
    core.flush(core.now());
    while let Some(transmit) = core.poll_transmit() {
        transport.send_datagram(&transmit.node_id, transmit.addr, transmit.payload);
    }
    while let Some(outgoing) = core.poll_message() {
        let Ok(to) = NodeId::new(outgoing.to.as_str()) else {
            continue;
        };
        transport.send_message(
            &to,
            outgoing.addr,
            outgoing.bytes,
            outgoing.carries_snapshot,
        );
    }
    while let Some(completion) = core.poll_completion() {
        waiting.complete(completion);
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
    found: mpsc::Sender<(NodeId, std::net::SocketAddr)>,
) {
    let mut backoff = Duration::from_millis(200);
    let mut failures = 0u64;
    loop {
        match transport.dial(addr).await {
            Ok((_connection, node_id)) => {
                tracing::debug!(%addr, seed = %node_id, "seed resolved");
                let _ = found.send((node_id, addr)).await;
                return;
            }
            Err(error) => {
                failures += 1;
                // A seed that is still starting is normal; one that keeps
                // refusing us (another CA, a wrong address) is for the operator.
                if failures == 3 || failures.is_multiple_of(30) {
                    tracing::warn!(%addr, failures, error = format!("{error:#}"), "cannot reach seed");
                } else {
                    tracing::debug!(%addr, error = format!("{error:#}"), "seed not reachable yet");
                }
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

/// 8 bytes of OS randomness (the shell may read the OS; the core may not).
pub fn rand_seed() -> [u8; 8] {
    let mut seed = [0u8; 8];
    fill_random(&mut seed);
    seed
}

/// Fills `bytes` from the OS's secure random source.
pub fn fill_random(bytes: &mut [u8]) {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(bytes)
        .expect("OS randomness");
}
