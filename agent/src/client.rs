//! The client side of the CLI: verbs that call an agent's HTTP API and print
//! tables (or the raw JSON with `--json`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use reqwest::blocking::{RequestBuilder, Response};
use serde_json::{Value, json};

use crate::cli::print_table;

/// How long a CLI request may take (a write waits for its commit).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to reach the agent.
#[derive(Debug, Clone)]
pub struct Client {
    /// The agent's HTTP address.
    pub http: String,
    /// Print raw JSON.
    pub json: bool,
    /// Bearer token.
    pub token: Option<String>,
    /// Ask for linearizable reads.
    pub consistent: bool,
}

/// `shoal node` verbs.
#[derive(Debug, Subcommand)]
pub enum NodeVerb {
    /// Set a node's status: active, draining, dead or removed (the catalog
    /// refuses transitions its lifecycle does not allow).
    Status {
        /// The node.
        node_id: String,
        /// The new status.
        status: String,
    },
    /// Remove a node that is gone for good: marks it dead (if it is not
    /// already dead or draining), then removed. Its telemetry is forgotten by
    /// every agent. Stop its agent first: a running agent registers again.
    Remove {
        /// The node.
        node_id: String,
    },
}

/// `shoal seeds` verbs.
#[derive(Debug, Subcommand)]
pub enum SeedsVerb {
    /// Add a seed (it must be running) as a Raft voter.
    Add {
        /// Its node id.
        node_id: String,
    },
    /// Remove a seed from the Raft voters.
    Remove {
        /// Its node id.
        node_id: String,
    },
    /// Hand Raft leadership to another voter.
    TransferLeader {
        /// Its node id.
        node_id: String,
    },
}

/// `shoal config` verbs.
#[derive(Debug, Subcommand)]
pub enum ConfigVerb {
    /// Set a key.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Only if the current version is this (compare-and-set).
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Show a key's value and version.
    Get {
        /// The key.
        key: String,
    },
    /// Show a key's history.
    History {
        /// The key.
        key: String,
    },
    /// Set a key back to the value it had at an earlier version.
    Rollback {
        /// The key.
        key: String,
        /// The version whose value to restore.
        version: u64,
    },
    /// List every key.
    List,
}

/// `shoal catalog` verbs.
#[derive(Debug, Subcommand)]
pub enum CatalogVerb {
    /// Write a backup of the catalog to FILE.
    Backup {
        /// Where to write it.
        file: PathBuf,
    },
    /// Replace the catalog's content with the backup in FILE.
    Restore {
        /// The backup.
        file: PathBuf,
    },
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> Result<RequestBuilder> {
        let client = reqwest::blocking::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()?;
        let mut request = client.request(method, self.url(path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Ok(request)
    }

    fn send(&self, request: RequestBuilder, path: &str) -> Result<Response> {
        let response = request.send().with_context(|| {
            format!(
                "cannot reach the agent at {} (set --http or SHOAL_HTTP_ADDR)",
                self.http
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|value| {
                let error = value.get("error")?;
                Some(format!(
                    "{} ({})",
                    error.get("message")?.as_str()?,
                    error.get("code")?.as_str()?
                ))
            })
            .unwrap_or(body);
        bail!("{path}: {status}: {message}")
    }

    fn get(&self, path: &str) -> Result<Value> {
        let path = if self.consistent {
            format!(
                "{path}{}consistent",
                if path.contains('?') { '&' } else { '?' }
            )
        } else {
            path.to_owned()
        };
        let response = self.send(self.request(reqwest::Method::GET, &path)?, &path)?;
        response
            .json()
            .with_context(|| format!("{path}: unexpected answer"))
    }

    fn write(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        let response = self.send(self.request(method, path)?.json(&body), path)?;
        response
            .json()
            .with_context(|| format!("{path}: unexpected answer"))
    }

    fn print_json(&self, value: &Value) -> Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }

    /// `shoal seeds [add|remove|transfer-leader ID]`.
    pub fn seeds(&self, verb: Option<SeedsVerb>) -> Result<()> {
        let (path, node_id) = match verb {
            None => {
                let status = self.get("/v1/seeds")?;
                if self.json {
                    return self.print_json(&status);
                }
                let text = |key: &str| match &status[key] {
                    Value::Null => "-".to_owned(),
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                let voters: Vec<String> = status["voters"]
                    .as_array()
                    .map(|voters| {
                        voters
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let leader = text("leader");
                let rows: Vec<Vec<String>> = voters
                    .iter()
                    .map(|voter| {
                        vec![
                            voter.clone(),
                            if *voter == leader {
                                "leader".into()
                            } else {
                                "voter".into()
                            },
                        ]
                    })
                    .collect();
                print_table(&["SEED", "RAFT"], &rows);
                println!(
                    "\nleader {leader}  term {}  commit {}  applied {}  (this agent: {})",
                    text("term"),
                    text("commit_index"),
                    text("applied_index"),
                    text("role")
                );
                return Ok(());
            }
            Some(SeedsVerb::Add { node_id }) => ("/v1/seeds/add", node_id),
            Some(SeedsVerb::Remove { node_id }) => ("/v1/seeds/remove", node_id),
            Some(SeedsVerb::TransferLeader { node_id }) => ("/v1/seeds/transfer-leader", node_id),
        };
        let answer = self.write(reqwest::Method::POST, path, json!({"node_id": node_id}))?;
        if self.json {
            return self.print_json(&answer);
        }
        println!("accepted by the leader; watch `shoal seeds`");
        Ok(())
    }

    /// `shoal config ...`.
    pub fn config(&self, verb: ConfigVerb) -> Result<()> {
        let encode = |key: &str| {
            key.replace('%', "%25")
                .replace('/', "%2F")
                .replace('?', "%3F")
                .replace('#', "%23")
        };
        match verb {
            ConfigVerb::Set {
                key,
                value,
                expected_version,
            } => {
                let body = json!({"value": value, "expected_version": expected_version});
                let answer = self.write(
                    reqwest::Method::PUT,
                    &format!("/v1/config/{}", encode(&key)),
                    body,
                )?;
                if self.json {
                    return self.print_json(&answer);
                }
                println!(
                    "{key} = version {} (catalog index {})",
                    answer["version"], answer["index"]
                );
            }
            ConfigVerb::Get { key } => {
                let entry = self.get(&format!("/v1/config/{}", encode(&key)))?;
                if self.json {
                    return self.print_json(&entry);
                }
                println!("{}", entry["value"].as_str().unwrap_or_default());
            }
            ConfigVerb::History { key } => {
                let entry = self.get(&format!("/v1/config/{}", encode(&key)))?;
                if self.json {
                    return self.print_json(&entry["history"]);
                }
                let rows: Vec<Vec<String>> = entry["history"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|version| {
                        vec![
                            version["version"].to_string(),
                            version["value"].as_str().unwrap_or_default().to_owned(),
                            version["actor"].as_str().unwrap_or_default().to_owned(),
                            version["set_at_unix_ms"].to_string(),
                        ]
                    })
                    .collect();
                print_table(&["VERSION", "VALUE", "ACTOR", "SET_AT_UNIX_MS"], &rows);
            }
            ConfigVerb::Rollback { key, version } => {
                let path = format!("/v1/config/{}/rollback", encode(&key));
                let answer =
                    self.write(reqwest::Method::POST, &path, json!({"version": version}))?;
                if self.json {
                    return self.print_json(&answer);
                }
                println!(
                    "{key} rolled back to the value of version {version}: now version {}",
                    answer["version"]
                );
            }
            ConfigVerb::List => {
                let entries = self.get("/v1/config")?;
                if self.json {
                    return self.print_json(&entries);
                }
                let rows: Vec<Vec<String>> = entries
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(key, entry)| {
                        vec![
                            key.clone(),
                            entry["version"].to_string(),
                            entry["value"].as_str().unwrap_or_default().to_owned(),
                        ]
                    })
                    .collect();
                print_table(&["KEY", "VERSION", "VALUE"], &rows);
            }
        }
        Ok(())
    }

    /// `shoal catalog [backup FILE | restore FILE]`.
    pub fn catalog(&self, verb: Option<CatalogVerb>) -> Result<()> {
        match verb {
            None => {
                let catalog = self.get("/v1/catalog")?;
                if self.json {
                    return self.print_json(&catalog);
                }
                let state = &catalog["state"];
                let count = |key: &str| state[key].as_object().map_or(0, |map| map.len());
                println!(
                    "catalog index {}  chain {}",
                    catalog["index"],
                    catalog["chain_hash"].as_str().unwrap_or("-")
                );
                println!(
                    "nodes {}  tables {}  shards {}  operations {}  config keys {}  tokens {}",
                    count("nodes"),
                    count("tables"),
                    count("shards"),
                    count("operations"),
                    count("config"),
                    count("tokens")
                );
                let rows: Vec<Vec<String>> = state["nodes"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(id, node)| {
                        vec![
                            id.clone(),
                            node["address"].as_str().unwrap_or_default().to_owned(),
                            node["role"].as_str().unwrap_or_default().to_owned(),
                            node["status"].as_str().unwrap_or_default().to_owned(),
                            node["generation"].to_string(),
                        ]
                    })
                    .collect();
                println!();
                print_table(&["NODE", "ADDRESS", "ROLE", "STATUS", "GEN"], &rows);
            }
            Some(CatalogVerb::Backup { file }) => {
                let response = self.send(
                    self.request(reqwest::Method::POST, "/v1/catalog/backup")?,
                    "/v1/catalog/backup",
                )?;
                let index = response
                    .headers()
                    .get("x-shoal-index")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("?")
                    .to_owned();
                let bytes = response.bytes().context("read the backup")?;
                std::fs::write(&file, &bytes)
                    .with_context(|| format!("write {}", file.display()))?;
                println!(
                    "wrote {} ({} bytes, catalog index {index})",
                    file.display(),
                    bytes.len()
                );
            }
            Some(CatalogVerb::Restore { file }) => {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
                let request = self
                    .request(reqwest::Method::POST, "/v1/catalog/restore")?
                    .body(bytes);
                let answer: Value = self.send(request, "/v1/catalog/restore")?.json()?;
                if self.json {
                    return self.print_json(&answer);
                }
                println!(
                    "restored the catalog of index {} at index {}",
                    answer["restored_from_index"], answer["index"]
                );
            }
        }
        Ok(())
    }

    /// `shoal audit`.
    pub fn audit(
        &self,
        actor: Option<String>,
        op: Option<String>,
        since_index: Option<u64>,
        limit: usize,
    ) -> Result<()> {
        let mut query = vec![format!("limit={limit}")];
        if let Some(actor) = actor {
            query.push(format!(
                "actor={}",
                actor
                    .replace('%', "%25")
                    .replace('&', "%26")
                    .replace(' ', "%20")
            ));
        }
        if let Some(op) = op {
            query.push(format!("op={op}"));
        }
        if let Some(since) = since_index {
            query.push(format!("since_index={since}"));
        }
        let records = self.get(&format!("/v1/audit?{}", query.join("&")))?;
        if self.json {
            return self.print_json(&records);
        }
        let rows: Vec<Vec<String>> = records
            .as_array()
            .into_iter()
            .flatten()
            .map(|record| {
                let text = |key: &str| record[key].as_str().unwrap_or_default().to_owned();
                vec![
                    record["index"].to_string(),
                    record["time_unix_ms"].to_string(),
                    text("actor"),
                    text("op"),
                    text("detail"),
                    text("result"),
                    text("request_id"),
                ]
            })
            .collect();
        print_table(
            &[
                "INDEX",
                "TIME_UNIX_MS",
                "ACTOR",
                "OP",
                "DETAIL",
                "RESULT",
                "REQUEST_ID",
            ],
            &rows,
        );
        Ok(())
    }

    fn set_status(&self, node_id: &str, status: &str) -> Result<Value> {
        let path = format!("/v1/nodes/{node_id}/status");
        self.write(reqwest::Method::POST, &path, json!({"status": status}))
    }

    /// `shoal node status|remove`.
    pub fn node(&self, verb: NodeVerb) -> Result<()> {
        match verb {
            NodeVerb::Status { node_id, status } => {
                let answer = self.set_status(&node_id, &status)?;
                if self.json {
                    return self.print_json(&answer);
                }
                println!("{node_id} is {status} (catalog index {})", answer["index"]);
            }
            NodeVerb::Remove { node_id } => {
                let catalog = self.get("/v1/catalog")?;
                let current = catalog["state"]["nodes"][&node_id]["status"]
                    .as_str()
                    .map(str::to_owned);
                match current.as_deref() {
                    None => bail!("node {node_id} is not in the catalog"),
                    Some("removed") => {}
                    Some("dead" | "draining" | "joining") => {}
                    Some(_) => {
                        self.set_status(&node_id, "dead")?;
                    }
                }
                let answer = self.set_status(&node_id, "removed")?;
                if self.json {
                    return self.print_json(&answer);
                }
                println!("{node_id} removed (catalog index {})", answer["index"]);
            }
        }
        Ok(())
    }

    /// `shoal telemetry [--node ID]`.
    pub fn telemetry(&self, node: Option<String>) -> Result<()> {
        let path = match &node {
            Some(node) => format!("/v1/telemetry?node={node}"),
            None => "/v1/telemetry".to_owned(),
        };
        let answer = self.get(&path)?;
        if self.json {
            return self.print_json(&answer);
        }
        let records: Vec<&Value> = match node {
            Some(_) => vec![&answer],
            None => answer
                .as_object()
                .map(|nodes| nodes.values().collect())
                .unwrap_or_default(),
        };
        let number = |value: &Value, decimals: usize| match value.as_f64() {
            Some(number) => format!("{number:.decimals$}"),
            None => "-".to_owned(),
        };
        let gib = |value: &Value| match value.as_u64() {
            Some(bytes) => format!("{:.1}", bytes as f64 / (1u64 << 30) as f64),
            None => "-".to_owned(),
        };
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|record| {
                let host = &record["host"];
                let db = &record["database"]["report"];
                vec![
                    record["node_id"].as_str().unwrap_or_default().to_owned(),
                    format!(
                        "{}.{}",
                        record["version"]["generation"], record["version"]["sequence"]
                    ),
                    number(&host["cpu_percent"], 1),
                    format!(
                        "{}/{}",
                        gib(&host["memory_used_bytes"]),
                        gib(&host["memory_total_bytes"])
                    ),
                    format!(
                        "{}/{}",
                        gib(&host["disk_used_bytes"]),
                        gib(&host["disk_capacity_bytes"])
                    ),
                    number(&db["qps"], 0),
                    db["latency_p99_us"]
                        .as_u64()
                        .map_or("-".into(), |us| us.to_string()),
                    db["replication_lag_ms"]
                        .as_u64()
                        .map_or("-".into(), |ms| ms.to_string()),
                    record["unreachable_peers"]
                        .as_array()
                        .map_or(0, Vec::len)
                        .to_string(),
                    record["age_ms"]
                        .as_u64()
                        .map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
                ]
            })
            .collect();
        print_table(
            &[
                "NODE", "VERSION", "CPU%", "MEM_GIB", "DISK_GIB", "QPS", "P99_US", "LAG_MS",
                "UNREACH", "AGE",
            ],
            &rows,
        );
        Ok(())
    }

    /// `shoal alerts`.
    pub fn alerts(&self) -> Result<()> {
        let alerts = self.get("/v1/alerts")?;
        if self.json {
            return self.print_json(&alerts);
        }
        let rows: Vec<Vec<String>> = alerts
            .as_array()
            .into_iter()
            .flatten()
            .map(|alert| {
                vec![
                    alert["rule"].as_str().unwrap_or_default().to_owned(),
                    alert["node_id"].as_str().unwrap_or_default().to_owned(),
                    format!(
                        "{:.1} {}",
                        alert["value"].as_f64().unwrap_or_default(),
                        alert["unit"].as_str().unwrap_or_default()
                    ),
                    format!("{:.1}", alert["threshold"].as_f64().unwrap_or_default()),
                    format!(
                        "{:.1}s",
                        alert["since_ms_ago"].as_u64().unwrap_or_default() as f64 / 1000.0
                    ),
                ]
            })
            .collect();
        print_table(&["RULE", "NODE", "VALUE", "THRESHOLD", "FOR"], &rows);
        Ok(())
    }

    /// `shoal acl bootstrap`.
    pub fn acl_bootstrap(&self) -> Result<()> {
        let answer = self.write(reqwest::Method::POST, "/v1/acl/bootstrap", json!({}))?;
        if self.json {
            return self.print_json(&answer);
        }
        println!(
            "the first admin token (shown once; keep it safe):\n{}",
            answer["token"].as_str().unwrap_or_default()
        );
        println!("\nuse it with: export SHOAL_TOKEN=...");
        Ok(())
    }

    /// `shoal token create --role R`.
    pub fn token_create(&self, role: &str, description: &str) -> Result<()> {
        if !["read", "operator", "admin"].contains(&role) {
            bail!("--role: must be read, operator or admin");
        }
        let answer = self.write(
            reqwest::Method::POST,
            "/v1/acl/tokens",
            json!({"role": role, "description": description}),
        )?;
        if self.json {
            return self.print_json(&answer);
        }
        println!(
            "token {} ({role}), shown once:\n{}",
            answer["token_id"].as_str().unwrap_or_default(),
            answer["token"].as_str().unwrap_or_default()
        );
        Ok(())
    }
}
