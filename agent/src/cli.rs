//! The command line: `shoal agent`, the client verbs that talk to an
//! agent's HTTP API, `shoal tls`, and `shoal demo`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use shoal_membership::NodeId;

use crate::config::{Config, HTTP_LISTEN_DEFAULT};
use crate::http::MemberJson;

/// Shoal: the control-plane sidecar of a sharded, replicated database.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// Address of the agent's HTTP API.
    #[arg(long, env = "SHOAL_HTTP_ADDR", default_value = HTTP_LISTEN_DEFAULT, global = true)]
    http: String,
    /// Print the raw JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Bearer token for writes (and audit reads) when ACLs are on.
    #[arg(long, env = "SHOAL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Read through the leader (linearizable) instead of the local copy.
    #[arg(long, global = true)]
    consistent: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent beside a database node.
    Agent {
        /// The agent's TOML config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// List the members this agent knows, with their state.
    Members {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A node's lifecycle in the catalog.
    Node {
        #[command(subcommand)]
        command: crate::client::NodeVerb,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every node's telemetry, as merged at this agent.
    Telemetry {
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Alerts firing, as evaluated at this agent.
    Alerts {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The seed group: voters, leader, term, commit and applied index.
    Seeds {
        #[command(subcommand)]
        command: Option<crate::client::SeedsVerb>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Versioned configuration entries.
    Config {
        #[command(subcommand)]
        command: crate::client::ConfigVerb,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The whole catalog; backup and restore.
    Catalog {
        #[command(subcommand)]
        command: Option<crate::client::CatalogVerb>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The audit trail of committed commands.
    Audit {
        /// Only this actor (`token:ID`, `agent:NODE`, ...).
        #[arg(long)]
        actor: Option<String>,
        /// Only this operation (`set_config`, `register_node`, ...).
        #[arg(long)]
        op: Option<String>,
        /// Only records at or after this catalog index.
        #[arg(long)]
        since_index: Option<u64>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Access control.
    Acl {
        #[command(subcommand)]
        command: AclCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Certificates for the cluster's mutual TLS.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Run a whole local cluster on loopback, with generated certificates.
    Demo {
        /// How many agents.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// How many of them are seeds (1, 3, 5 or 7).
        #[arg(long, default_value_t = 3)]
        seeds: usize,
        /// Where to put certificates, configs and data (default: a new
        /// temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// First port: agent i uses base+i for QUIC and base+100+i for HTTP.
        #[arg(long, default_value_t = 17400)]
        base_port: u16,
    },
}

#[derive(Debug, Subcommand)]
enum AclCommand {
    /// Create the first admin token (works exactly once per cluster).
    Bootstrap,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token with a role.
    Create {
        /// read, operator or admin.
        #[arg(long)]
        role: String,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
}

#[derive(Debug, Subcommand)]
enum TlsCommand {
    /// Certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Node certificates.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create a cluster CA: writes ca.pem and ca-key.pem.
    Create {
        /// Directory to write into.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Create a node certificate signed by the CA: writes ID.pem and ID-key.pem.
    Create {
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long)]
        ca: PathBuf,
        /// The node id the certificate names.
        #[arg(long)]
        node_id: String,
        /// An IP address to add as a subject alternative name (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// A DNS name to add as a subject alternative name (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// Directory to write into.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Parses the command line and runs it; errors print as `error: ...` with
/// their causes, and exit 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Agent { config } => {
            let config = Config::load(&config)?;
            init_tracing(&config.log_level)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("start tokio runtime")?;
            runtime.block_on(crate::shell::run(config))
        }
        Command::Members { client } => members(&client),
        Command::Seeds { command, client } => client.client().seeds(command),
        Command::Telemetry { node, client } => client.client().telemetry(node),
        Command::Node { command, client } => client.client().node(command),
        Command::Alerts { client } => client.client().alerts(),
        Command::Config { command, client } => client.client().config(command),
        Command::Catalog { command, client } => client.client().catalog(command),
        Command::Audit {
            actor,
            op,
            since_index,
            limit,
            client,
        } => client.client().audit(actor, op, since_index, limit),
        Command::Acl {
            command: AclCommand::Bootstrap,
            client,
        } => client.client().acl_bootstrap(),
        Command::Token {
            command: TokenCommand::Create { role, description },
            client,
        } => client.client().token_create(&role, &description),
        Command::Tls { command } => match command {
            TlsCommand::Ca {
                command: CaCommand::Create { out },
            } => {
                let path = crate::tls::create_ca(&out, "")?;
                println!(
                    "wrote {} and {}",
                    path.display(),
                    out.join("ca-key.pem").display()
                );
                Ok(())
            }
            TlsCommand::Cert {
                command:
                    CertCommand::Create {
                        ca,
                        node_id,
                        ip,
                        dns,
                        out,
                    },
            } => {
                let node_id = NodeId::new(node_id).context("--node-id")?;
                let (cert, key) = crate::tls::create_cert(&ca, &node_id, &ip, &dns, &out)?;
                println!("wrote {} and {}", cert.display(), key.display());
                Ok(())
            }
        },
        Command::Demo {
            nodes,
            seeds,
            dir,
            base_port,
        } => crate::demo::run(nodes, seeds, dir, base_port),
    }
}

fn init_tracing(level: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("log.level: bad filter {level:?}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .init();
    Ok(())
}

/// GETs `path` from the agent and decodes the JSON, turning API errors into
/// readable messages.
pub fn get_json<T: serde::de::DeserializeOwned>(http: &str, path: &str) -> Result<T> {
    let url = format!("http://{http}{path}");
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let response = client.get(&url).send().with_context(|| {
        format!("cannot reach the agent at {http} (set --http or SHOAL_HTTP_ADDR)")
    })?;
    let status = response.status();
    let body = response
        .text()
        .with_context(|| format!("read answer of {url}"))?;
    if !status.is_success() {
        bail!("{url}: {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("{url}: unexpected answer"))
}

fn members(client: &ClientArgs) -> Result<()> {
    if client.json {
        let raw: serde_json::Value = get_json(&client.http, "/v1/members")?;
        println!("{}", serde_json::to_string_pretty(&raw)?);
        return Ok(());
    }
    let members: Vec<MemberJson> = get_json(&client.http, "/v1/members")?;
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|member| {
            let labels = member
                .labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(",");
            let heard = match member.last_heard_ms_ago {
                _ if member.local => "-".to_string(),
                Some(ms) => format!("{:.1}s ago", ms as f64 / 1000.0),
                None => "never".to_string(),
            };
            vec![
                format!("{}{}", member.node_id, if member.local { " *" } else { "" }),
                member.addr.clone(),
                member.state.clone(),
                member.generation.to_string(),
                member.role.clone(),
                labels,
                heard,
            ]
        })
        .collect();
    print_table(
        &["NODE", "ADDR", "STATE", "GEN", "ROLE", "LABELS", "HEARD"],
        &rows,
    );
    Ok(())
}

/// Prints rows as an aligned text table.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

impl ClientArgs {
    fn client(self) -> crate::client::Client {
        crate::client::Client {
            http: self.http,
            json: self.json,
            token: self.token,
            consistent: self.consistent,
        }
    }
}
