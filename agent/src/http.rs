//! The HTTP API (axum): what the local database, routers and operators ask
//! an agent.
//!
//! * Every error is JSON `{"error": {"code", "message"}}` with a fitting
//!   status; bad input never changes state.
//! * Every catalog read carries `X-Shoal-Index` (the catalog version it
//!   reflects) and, when known, `X-Shoal-Staleness-Ms`; `?consistent` first
//!   runs a read barrier through the leader (linearizable).
//! * With ACLs on (the default), writes need `Authorization: Bearer TOKEN`
//!   with a sufficient role; a missing or unknown token gets 401, a weak
//!   one 403, and nothing changes.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shoal_consensus::{
    Actor, Catalog, CatalogBackup, CatalogIndex, Command, CommandError, MembershipChange, Op,
    Outcome, RequestId, TokenRole,
};
use tokio::sync::oneshot;

use crate::core::messages::{SeedChange, SubmitOutcome};
use crate::shell::{Handle, Query, View, wall_clock_ms};

/// Largest JSON request body, in bytes.
pub const JSON_BODY_BYTES_MAX: usize = 1 << 20;
/// Largest catalog restore body, in bytes.
pub const RESTORE_BODY_BYTES_MAX: usize = 64 << 20;
/// A write not answered by the core after this long gets 503 (the core's own
/// request timeout is shorter, so this only guards a stuck loop).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// Most audit records returned by one request.
pub const AUDIT_LIMIT_MAX: usize = 10_000;

/// One member as `GET /v1/members` returns it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberJson {
    /// The node's stable name.
    pub node_id: String,
    /// Its SWIM/QUIC address.
    pub addr: String,
    /// `alive`, `suspect` or `down`.
    pub state: String,
    /// Which start of its agent this is.
    pub generation: u64,
    /// `seed` or `member`.
    pub role: String,
    /// Locality and other labels.
    pub labels: BTreeMap<String, String>,
    /// Its agent's version.
    pub version: String,
    /// Milliseconds since this agent last received a packet from it; `null`
    /// if only heard of through others.
    pub last_heard_ms_ago: Option<u64>,
    /// Whether this row is the answering agent itself.
    pub local: bool,
}

/// A JSON error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with `status`, a stable machine `code`, and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn stopping() -> Self {
        Self::unavailable("the agent is stopping")
    }

    /// The HTTP status and code for a committed-but-rejected command.
    fn rejected(error: &CommandError) -> Self {
        let status = match error {
            CommandError::NotFound { .. } => StatusCode::NOT_FOUND,
            CommandError::Malformed { .. }
            | CommandError::Invalid { .. }
            | CommandError::InvalidReplicas { .. }
            | CommandError::NotAdjacent { .. }
            | CommandError::StepOutOfOrder { .. } => StatusCode::BAD_REQUEST,
            CommandError::AclNotBootstrapped => StatusCode::UNAUTHORIZED,
            _ => StatusCode::CONFLICT,
        };
        Self::new(status, error.code(), error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    /// Every malformed body is a 400 naming the problem (axum would say 422
    /// for a well-formed body of the wrong shape); only a body over the
    /// limit is a 413.
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                rejection.body_text(),
            );
        }
        Self::bad_request(rejection.body_text())
    }
}

/// Serves the API on `listener` until the process exits.
pub async fn serve(listener: tokio::net::TcpListener, handle: Handle) {
    if let Err(error) = axum::serve(listener, router(handle)).await {
        tracing::error!(%error, "http server stopped");
    }
}

/// The API's routes.
pub fn router(handle: Handle) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/members", get(members))
        .route("/metrics", get(metrics))
        .route("/v1/catalog", get(catalog))
        .route("/v1/catalog/backup", post(backup))
        .route(
            "/v1/catalog/restore",
            post(restore).layer(DefaultBodyLimit::max(RESTORE_BODY_BYTES_MAX)),
        )
        .route("/v1/config", get(config_list))
        .route("/v1/config/{key}", put(config_set).get(config_get))
        .route("/v1/config/{key}/rollback", post(config_rollback))
        .route("/v1/audit", get(audit))
        .route("/v1/acl/bootstrap", post(acl_bootstrap))
        .route("/v1/acl/tokens", post(token_create))
        .route("/v1/nodes/{id}/status", post(node_status))
        .route("/v1/agent/telemetry", put(telemetry_put))
        .route("/v1/telemetry", get(telemetry_get))
        .route("/v1/alerts", get(alerts_get))
        .route("/v1/seeds", get(seeds))
        .route("/v1/seeds/add", post(seeds_add))
        .route("/v1/seeds/remove", post(seeds_remove))
        .route("/v1/seeds/transfer-leader", post(seeds_transfer))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(JSON_BODY_BYTES_MAX))
        .with_state(handle)
}

// ----- asking the core -----

async fn ask<T>(
    handle: &Handle,
    query: impl FnOnce(oneshot::Sender<T>) -> Query,
) -> Result<T, ApiError> {
    let (reply, answer) = oneshot::channel();
    handle
        .queries
        .send(query(reply))
        .await
        .map_err(|_| ApiError::stopping())?;
    answer.await.map_err(|_| ApiError::stopping())
}

/// Runs `read` on the core loop against the local catalog.
async fn read<T: Send + 'static>(
    handle: &Handle,
    read: impl FnOnce(&View<'_>) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let (reply, answer) = oneshot::channel();
    let query = Query::Read(Box::new(move |view: &View<'_>| {
        let _ = reply.send(read(view));
    }));
    handle
        .queries
        .send(query)
        .await
        .map_err(|_| ApiError::stopping())?;
    answer.await.map_err(|_| ApiError::stopping())
}

/// A catalog read as the API answers it: the body plus version headers.
struct Versioned {
    body: Value,
    index: CatalogIndex,
    staleness: Option<Duration>,
}

impl IntoResponse for Versioned {
    fn into_response(self) -> Response {
        let mut response = axum::Json(self.body).into_response();
        let headers = response.headers_mut();
        headers.insert("x-shoal-index", HeaderValue::from(self.index.0));
        if let Some(staleness) = self.staleness {
            headers.insert(
                "x-shoal-staleness-ms",
                HeaderValue::from(staleness.as_millis() as u64),
            );
        }
        response
    }
}

fn wants_consistent(query: &Option<String>) -> bool {
    query.as_deref().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "consistent" || pair.starts_with("consistent="))
    })
}

/// Reads the catalog, after a read barrier when `consistent`.
async fn catalog_read(
    handle: &Handle,
    consistent: bool,
    extract: impl FnOnce(&Catalog) -> Result<Value, ApiError> + Send + 'static,
) -> Result<Versioned, ApiError> {
    if consistent {
        ask(handle, Query::ReadBarrier)
            .await?
            .map_err(ApiError::unavailable)?;
    }
    read(handle, move |view| {
        extract(view.catalog).map(|body| Versioned {
            body,
            index: view.catalog.applied_index(),
            staleness: if consistent {
                Some(Duration::ZERO)
            } else {
                view.staleness
            },
        })
    })
    .await?
}

// ----- auth and writes -----

/// Checks the bearer token for `required`; returns the actor to record.
async fn authorize(
    handle: &Handle,
    headers: &HeaderMap,
    required: TokenRole,
) -> Result<Actor, ApiError> {
    if !handle.acl_enabled {
        return Ok(Actor("acl-disabled".into()));
    }
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
        .map(str::to_owned);
    let found = read(handle, move |view| {
        let token = secret
            .as_deref()
            .map(|secret| view.catalog.authenticate(secret).cloned());
        (view.catalog.state().acl_bootstrapped, token)
    })
    .await?;
    match found {
        // Before the first token exists, say what to do about it, whatever
        // was (or was not) sent.
        (false, _) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "acl_not_bootstrapped",
            "no token exists yet: create the first admin token with `shoal acl bootstrap`",
        )),
        (true, None) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this needs `Authorization: Bearer TOKEN` (CLI: SHOAL_TOKEN)",
        )),
        (true, Some(None)) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown token",
        )),
        (true, Some(Some(token))) if token.role < required => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {} has role {:?}; this needs {:?}",
                token.token_id, token.role, required
            )
            .to_lowercase(),
        )),
        (true, Some(Some(token))) => Ok(Actor(format!("token:{}", token.token_id))),
    }
}

/// A fresh request id, or the client's own (`X-Shoal-Request-Id`) so that a
/// client may retry a write safely.
fn request_id(headers: &HeaderMap) -> Result<RequestId, ApiError> {
    if let Some(value) = headers.get("x-shoal-request-id") {
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request("X-Shoal-Request-Id: not text"))?;
        return RequestId::new(text)
            .map_err(|error| ApiError::bad_request(format!("X-Shoal-Request-Id: {error}")));
    }
    let mut bytes = [0u8; 12];
    crate::shell::fill_random(&mut bytes);
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(RequestId::new(format!("http-{hex}")).expect("hex ids are valid"))
}

/// Submits `op` and waits until it applied at this agent.
async fn write(
    handle: &Handle,
    headers: &HeaderMap,
    actor: Actor,
    op: Op,
) -> Result<(CatalogIndex, Outcome), ApiError> {
    let command = Command {
        request_id: request_id(headers)?,
        actor,
        time_unix_ms: wall_clock_ms(),
        op,
    };
    let outcome = tokio::time::timeout(
        WRITE_TIMEOUT,
        ask(handle, |reply| Query::Submit(command, reply)),
    )
    .await
    .map_err(|_| ApiError::unavailable("the write did not finish in time"))??;
    match outcome {
        SubmitOutcome::Applied {
            index,
            result: Ok(outcome),
        } => Ok((index, outcome)),
        SubmitOutcome::Applied {
            result: Err(error), ..
        } => Err(ApiError::rejected(&error)),
        SubmitOutcome::Failed { reason } => Err(ApiError::unavailable(reason)),
        SubmitOutcome::NotLeader { .. } | SubmitOutcome::Accepted => {
            Err(ApiError::unavailable("no leader accepted the write"))
        }
    }
}

fn written(index: CatalogIndex, body: Value) -> Versioned {
    Versioned {
        body,
        index,
        staleness: Some(Duration::ZERO),
    }
}

// ----- handlers -----

async fn health(State(handle): State<Handle>) -> impl IntoResponse {
    axum::Json(json!({
        "status": "ok",
        "node_id": handle.identity.node_id,
        "generation": handle.identity.generation.0,
        "role": handle.identity.meta.role,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": handle.started.elapsed().as_millis() as u64,
    }))
}

async fn members(State(handle): State<Handle>) -> Result<axum::Json<Vec<MemberJson>>, ApiError> {
    let rows = ask(&handle, Query::Members).await?;
    let now = handle.started.elapsed();
    let members = rows
        .into_iter()
        .map(|row| MemberJson {
            node_id: row.identity.node_id.to_string(),
            addr: row.identity.addr.to_string(),
            state: row.state.as_str().to_string(),
            generation: row.identity.generation.0,
            role: row.identity.meta.role.to_string(),
            labels: row.identity.meta.labels.clone(),
            version: row.identity.meta.version.clone(),
            last_heard_ms_ago: row
                .last_heard
                .map(|at| now.saturating_sub(at).as_millis() as u64),
            local: row.is_local,
        })
        .collect();
    Ok(axum::Json(members))
}

async fn metrics(State(handle): State<Handle>) -> Result<Response, ApiError> {
    ask(&handle, Query::PublishMetrics).await?;
    let body = handle.metrics.render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

/// The catalog as JSON, with token secrets' hashes left out.
fn catalog_json(catalog: &Catalog) -> Value {
    let mut state = serde_json::to_value(catalog.state()).unwrap_or(Value::Null);
    if let Some(tokens) = state.get_mut("tokens").and_then(Value::as_object_mut) {
        for token in tokens.values_mut() {
            if let Some(token) = token.as_object_mut() {
                token.remove("secret_sha256");
            }
        }
    }
    json!({
        "index": catalog.applied_index().0,
        "chain_hash": catalog.chain_hash().to_string(),
        "seeds": catalog.seeds(),
        "state": state,
    })
}

async fn catalog(
    State(handle): State<Handle>,
    RawQuery(query): RawQuery,
) -> Result<Versioned, ApiError> {
    catalog_read(&handle, wants_consistent(&query), |catalog| {
        Ok(catalog_json(catalog))
    })
    .await
}

async fn config_list(
    State(handle): State<Handle>,
    RawQuery(query): RawQuery,
) -> Result<Versioned, ApiError> {
    catalog_read(&handle, wants_consistent(&query), |catalog| {
        let entries: BTreeMap<&String, Value> = catalog
            .state()
            .config
            .iter()
            .map(|(key, entry)| (key, json!({"value": entry.value, "version": entry.version})))
            .collect();
        Ok(json!(entries))
    })
    .await
}

async fn config_get(
    State(handle): State<Handle>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Versioned, ApiError> {
    catalog_read(&handle, wants_consistent(&query), move |catalog| {
        catalog
            .state()
            .config
            .get(&key)
            .map(|entry| json!(entry))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no config key {key:?}"),
                )
            })
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSet {
    value: String,
    #[serde(default)]
    expected_version: Option<u64>,
}

async fn config_set(
    State(handle): State<Handle>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Result<axum::Json<ConfigSet>, JsonRejection>,
) -> Result<Versioned, ApiError> {
    let actor = authorize(&handle, &headers, TokenRole::Operator).await?;
    let axum::Json(body) = body?;
    let op = Op::SetConfig {
        key: key.clone(),
        value: body.value,
        expected_version: body.expected_version,
    };
    write_config(&handle, &headers, actor, key, op).await
}

/// Writes a config change and answers with the key's new version.
async fn write_config(
    handle: &Handle,
    headers: &HeaderMap,
    actor: Actor,
    key: String,
    op: Op,
) -> Result<Versioned, ApiError> {
    let (index, outcome) = write(handle, headers, actor, op).await?;
    let version = match outcome {
        Outcome::ConfigSet { version } => Some(version),
        _ => None,
    };
    Ok(written(
        index,
        json!({"key": key, "version": version, "index": index.0}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigRollback {
    version: u64,
}

async fn config_rollback(
    State(handle): State<Handle>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Result<axum::Json<ConfigRollback>, JsonRejection>,
) -> Result<Versioned, ApiError> {
    let actor = authorize(&handle, &headers, TokenRole::Operator).await?;
    let axum::Json(body) = body?;
    let op = Op::RollbackConfig {
        key: key.clone(),
        version: body.version,
    };
    write_config(&handle, &headers, actor, key, op).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditFilter {
    actor: Option<String>,
    op: Option<String>,
    since_index: Option<u64>,
    limit: Option<usize>,
    consistent: Option<String>,
}

async fn audit(
    State(handle): State<Handle>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<AuditFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Versioned, ApiError> {
    let axum::extract::Query(filter) =
        query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    authorize(&handle, &headers, TokenRole::Read).await?;
    let limit = filter.limit.unwrap_or(100);
    if limit == 0 || limit > AUDIT_LIMIT_MAX {
        return Err(ApiError::bad_request(format!(
            "limit: must be 1 to {AUDIT_LIMIT_MAX}"
        )));
    }
    let consistent = filter.consistent.is_some();
    catalog_read(&handle, consistent, move |catalog| {
        // The newest `limit` matching records, oldest first.
        let mut records: Vec<Value> = catalog
            .audit()
            .rev()
            .filter(|record| {
                filter
                    .actor
                    .as_ref()
                    .is_none_or(|actor| record.actor == *actor)
            })
            .filter(|record| filter.op.as_ref().is_none_or(|op| record.op == *op))
            .filter(|record| {
                filter
                    .since_index
                    .is_none_or(|since| record.index.0 >= since)
            })
            .take(limit)
            .map(|record| json!(record))
            .collect();
        records.reverse();
        Ok(json!(records))
    })
    .await
}

async fn backup(State(handle): State<Handle>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&handle, &headers, TokenRole::Admin).await?;
    // A backup is taken after a read barrier: it holds every acknowledged write.
    ask(&handle, Query::ReadBarrier)
        .await?
        .map_err(ApiError::unavailable)?;
    let (index, bytes) = read(&handle, |view| {
        (view.catalog.applied_index(), view.catalog.backup().encode())
    })
    .await?;
    let mut response =
        ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response();
    response
        .headers_mut()
        .insert("x-shoal-index", HeaderValue::from(index.0));
    Ok(response)
}

async fn restore(
    State(handle): State<Handle>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Versioned, ApiError> {
    let actor = authorize(&handle, &headers, TokenRole::Admin).await?;
    let backup = CatalogBackup::decode(&body)
        .map_err(|error| ApiError::bad_request(format!("not a shoal catalog backup: {error}")))?;
    let source_index = backup.applied_index;
    let op = Op::Restore {
        state: Box::new(backup.state),
    };
    let (index, _) = write(&handle, &headers, actor, op).await?;
    Ok(written(
        index,
        json!({"index": index.0, "restored_from_index": source_index.0}),
    ))
}

/// A new token secret and its public id.
fn new_token() -> (String, String) {
    let mut bytes = [0u8; 20];
    crate::shell::fill_random(&mut bytes);
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let token_id = hex[..8].to_owned();
    (token_id.clone(), format!("shoal_{token_id}_{}", &hex[8..]))
}

async fn acl_bootstrap(
    State(handle): State<Handle>,
    headers: HeaderMap,
) -> Result<Versioned, ApiError> {
    let (token_id, secret) = new_token();
    let op = Op::BootstrapAcl {
        token_id: token_id.clone(),
        secret_sha256: shoal_consensus::hash_token_secret(&secret),
    };
    let (index, _) = write(&handle, &headers, Actor("acl-bootstrap".into()), op).await?;
    Ok(written(
        index,
        json!({"token_id": token_id, "token": secret, "role": "admin"}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenCreate {
    role: TokenRole,
    #[serde(default)]
    description: String,
}

async fn token_create(
    State(handle): State<Handle>,
    headers: HeaderMap,
    body: Result<axum::Json<TokenCreate>, JsonRejection>,
) -> Result<Versioned, ApiError> {
    let actor = authorize(&handle, &headers, TokenRole::Admin).await?;
    let axum::Json(body) = body?;
    let (token_id, secret) = new_token();
    let op = Op::CreateToken {
        token_id: token_id.clone(),
        role: body.role,
        secret_sha256: shoal_consensus::hash_token_secret(&secret),
        description: body.description,
    };
    let (index, _) = write(&handle, &headers, actor, op).await?;
    Ok(written(
        index,
        json!({"token_id": token_id, "token": secret, "role": body.role}),
    ))
}

async fn seeds(
    State(handle): State<Handle>,
    RawQuery(query): RawQuery,
) -> Result<Versioned, ApiError> {
    if wants_consistent(&query) {
        ask(&handle, Query::ReadBarrier)
            .await?
            .map_err(ApiError::unavailable)?;
    }
    read(&handle, |view| {
        let status = &view.seeds;
        Versioned {
            body: json!({
                "voters": status.voters,
                "voters_outgoing": status.voters_outgoing,
                "leader": status.leader,
                "role": status.role,
                "term": status.term.map(|term| term.0),
                "commit_index": status.commit_index.map(|index| index.0),
                "applied_index": status.applied_index.0,
            }),
            index: view.catalog.applied_index(),
            staleness: view.staleness,
        }
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedTarget {
    node_id: String,
}

async fn seed_change(
    handle: &Handle,
    headers: &HeaderMap,
    body: Result<axum::Json<SeedTarget>, JsonRejection>,
    change: impl FnOnce(shoal_consensus::NodeId) -> SeedChange,
) -> Result<Versioned, ApiError> {
    authorize(handle, headers, TokenRole::Admin).await?;
    let axum::Json(body) = body?;
    let node_id = shoal_consensus::NodeId::new(body.node_id)
        .map_err(|error| ApiError::bad_request(format!("node_id: {error}")))?;
    let request_id = request_id(headers)?;
    let change = change(node_id);
    let outcome = ask(handle, |reply| {
        Query::ChangeSeeds(request_id, change, reply)
    })
    .await?;
    match outcome {
        SubmitOutcome::Accepted => {
            read(handle, |view| Versioned {
                body: json!({"accepted": true}),
                index: view.catalog.applied_index(),
                staleness: view.staleness,
            })
            .await
        }
        SubmitOutcome::Failed { reason } => {
            Err(ApiError::new(StatusCode::CONFLICT, "refused", reason))
        }
        _ => Err(ApiError::unavailable("no leader accepted the change")),
    }
}

async fn seeds_add(
    State(handle): State<Handle>,
    headers: HeaderMap,
    body: Result<axum::Json<SeedTarget>, JsonRejection>,
) -> Result<Versioned, ApiError> {
    seed_change(&handle, &headers, body, |node| {
        SeedChange::Membership(vec![MembershipChange::AddVoter(node)])
    })
    .await
}

async fn seeds_remove(
    State(handle): State<Handle>,
    headers: HeaderMap,
    body: Result<axum::Json<SeedTarget>, JsonRejection>,
) -> Result<Versioned, ApiError> {
    seed_change(&handle, &headers, body, |node| {
        SeedChange::Membership(vec![MembershipChange::Remove(node)])
    })
    .await
}

async fn seeds_transfer(
    State(handle): State<Handle>,
    headers: HeaderMap,
    body: Result<axum::Json<SeedTarget>, JsonRejection>,
) -> Result<Versioned, ApiError> {
    seed_change(&handle, &headers, body, SeedChange::TransferLeader).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeStatusChange {
    status: shoal_consensus::NodeStatus,
}

async fn node_status(
    State(handle): State<Handle>,
    headers: HeaderMap,
    Path(node_id): Path<String>,
    body: Result<axum::Json<NodeStatusChange>, JsonRejection>,
) -> Result<Versioned, ApiError> {
    let actor = authorize(&handle, &headers, TokenRole::Operator).await?;
    let axum::Json(body) = body?;
    let node_id = shoal_consensus::NodeId::new(node_id)
        .map_err(|error| ApiError::bad_request(format!("node id: {error}")))?;
    let op = Op::SetNodeStatus {
        node_id: node_id.clone(),
        status: body.status,
    };
    let (index, _) = write(&handle, &headers, actor, op).await?;
    Ok(written(
        index,
        json!({"node_id": node_id, "status": body.status, "index": index.0}),
    ))
}

async fn telemetry_put(
    State(handle): State<Handle>,
    body: Result<axum::Json<shoal_membership::telemetry::DatabaseReport>, JsonRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let axum::Json(report) = body?;
    ask(&handle, |reply| Query::DatabaseReport(report, reply))
        .await?
        .map_err(ApiError::bad_request)?;
    Ok(axum::Json(json!({"accepted": true})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetryFilter {
    node: Option<String>,
}

async fn telemetry_get(
    State(handle): State<Handle>,
    query: Result<axum::extract::Query<TelemetryFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let axum::extract::Query(filter) =
        query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let node = match filter.node {
        Some(node) => Some(
            shoal_membership::NodeId::new(node)
                .map_err(|error| ApiError::bad_request(format!("node: {error}")))?,
        ),
        None => None,
    };
    read(&handle, move |view| {
        view.core.membership().with_telemetry(|store| {
            let row = |record: &shoal_membership::telemetry::NodeRecord| {
                let mut value = json!(record);
                let age = store
                    .meta(&record.node_id)
                    .map(|meta| view.now.saturating_sub(meta.updated_at));
                value["age_ms"] = json!(age.map(|age| age.as_millis() as u64));
                value
            };
            match &node {
                Some(node) => store
                    .record(node)
                    .map(|record| json!(row(record)))
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::NOT_FOUND,
                            "not_found",
                            format!("no telemetry for node {node}"),
                        )
                    }),
                None => {
                    let nodes: BTreeMap<String, Value> = store
                        .map()
                        .records()
                        .map(|record| (record.node_id.to_string(), row(record)))
                        .collect();
                    Ok(json!(nodes))
                }
            }
        })
    })
    .await?
    .map(axum::Json)
}

async fn alerts_get(State(handle): State<Handle>) -> Result<axum::Json<Value>, ApiError> {
    read(&handle, |view| {
        let alerts: Vec<Value> = view
            .core
            .alerts()
            .iter()
            .map(|alert| {
                json!({
                    "rule": alert.rule.name(),
                    "node_id": alert.node_id,
                    "value": alert.value,
                    "threshold": alert.threshold,
                    "unit": alert.rule.unit(),
                    "since_ms_ago": view.now.saturating_sub(alert.since).as_millis() as u64,
                })
            })
            .collect();
        axum::Json(json!(alerts))
    })
    .await
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
