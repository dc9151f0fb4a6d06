//! Closed-loop load generator for the consensus benchmark (issue #4).
//!
//! `--clients N` tasks each own one HTTP/1.1 keep-alive connection (one
//! `reqwest::Client` per task, so no connection is shared) and send one small
//! write, wait for its answer, and send the next, for `--warmup-s` and then
//! `--duration-s` seconds. Only writes that complete inside the measured
//! window count: throughput is their number over the window, and their
//! latencies (send to full answer) are sorted for p50/p90/p99/max.
//!
//! * `--system shoal`: `PUT {url}/v1/config/{key}` with `{"value": "..."}`;
//!   the agent answers once the write has committed and applied locally.
//! * `--system etcd`: `POST {url}/v3/kv/put` with base64 key and value, the
//!   etcd v3 HTTP/JSON gateway; etcd answers once the put has committed and
//!   applied at the member that received it.
//!
//! Keys: client `c` writes `{prefix}c{c}k{i % keys_per_client}`, so clients
//! never write the same key and the key space stays bounded (Shoal caps the
//! number of config keys at 10,000). Values are `--value-bytes` ASCII bytes.
//!
//! Prints one JSON line with the result on stdout, and a summary on stderr.

use std::time::{Duration, Instant};

use base64::Engine as _;

/// Most clients; each is a task with its own connection.
const CLIENTS_MAX: usize = 4096;
/// Longest measured window, in seconds.
const DURATION_S_MAX: u64 = 600;
/// Pause after a failed request, so an unavailable server is not hammered.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

#[derive(Clone, Debug)]
struct Args {
    system: System,
    url: String,
    clients: usize,
    warmup_s: u64,
    duration_s: u64,
    value_bytes: usize,
    keys_per_client: u64,
    key_prefix: String,
    label: String,
    threads: usize,
    timeout_s: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum System {
    Shoal,
    Etcd,
}

fn usage() -> ! {
    eprintln!(
        "usage: consensus-loadgen --system shoal|etcd --url http://HOST:PORT [--clients N] \
         [--warmup-s S] [--duration-s S] [--value-bytes B] [--keys-per-client K] \
         [--key-prefix P] [--label L] [--threads T] [--timeout-s S]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        system: System::Shoal,
        url: String::new(),
        clients: 1,
        warmup_s: 2,
        duration_s: 10,
        value_bytes: 16,
        keys_per_client: 8,
        key_prefix: "bench-".into(),
        label: String::new(),
        threads: 1,
        timeout_s: 15,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        let number = |text: String| text.parse::<u64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--system" => {
                args.system = match value().as_str() {
                    "shoal" => System::Shoal,
                    "etcd" => System::Etcd,
                    _ => usage(),
                }
            }
            "--url" => args.url = value().trim_end_matches('/').to_string(),
            "--clients" => args.clients = number(value()) as usize,
            "--warmup-s" => args.warmup_s = number(value()),
            "--duration-s" => args.duration_s = number(value()),
            "--value-bytes" => args.value_bytes = number(value()) as usize,
            "--keys-per-client" => args.keys_per_client = number(value()),
            "--key-prefix" => args.key_prefix = value(),
            "--label" => args.label = value(),
            "--threads" => args.threads = number(value()) as usize,
            "--timeout-s" => args.timeout_s = number(value()),
            _ => usage(),
        }
    }
    let valid = !args.url.is_empty()
        && (1..=CLIENTS_MAX).contains(&args.clients)
        && (1..=DURATION_S_MAX).contains(&args.duration_s)
        && args.warmup_s <= DURATION_S_MAX
        && (1..=4096).contains(&args.value_bytes)
        && args.keys_per_client >= 1
        && args.threads >= 1
        && args.timeout_s >= 1;
    if !valid {
        usage();
    }
    args
}

/// What one client measured.
#[derive(Default)]
struct ClientResult {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn request(args: &Args, http: &reqwest::Client, client: usize, seq: u64) -> reqwest::RequestBuilder {
    let key = format!("{}c{client}k{}", args.key_prefix, seq % args.keys_per_client);
    // A value of exactly `value_bytes` ASCII characters that changes every write.
    let mut value = format!("{seq:0width$x}", width = args.value_bytes);
    value.truncate(args.value_bytes);
    match args.system {
        System::Shoal => http
            .put(format!("{}/v1/config/{key}", args.url))
            .header("content-type", "application/json")
            .body(format!("{{\"value\":\"{value}\"}}")),
        System::Etcd => {
            let b64 = base64::engine::general_purpose::STANDARD;
            http.post(format!("{}/v3/kv/put", args.url))
                .header("content-type", "application/json")
                .body(format!(
                    "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                    b64.encode(key),
                    b64.encode(value)
                ))
        }
    }
}

async fn run_client(
    args: Args,
    client: usize,
    window_start: Instant,
    window_end: Instant,
) -> ClientResult {
    // One client, one pooled connection: it is reused for every request.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(args.timeout_s))
        .tcp_nodelay(true)
        .build()
        .expect("build the http client");
    let mut result = ClientResult {
        latencies_us: Vec::with_capacity(1 << 14),
        ..ClientResult::default()
    };
    let mut seq: u64 = 0;
    while Instant::now() < window_end {
        let sent = Instant::now();
        let answer = request(&args, &http, client, seq).send().await;
        let outcome = match answer {
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(_) if status.is_success() => Ok(()),
                    Ok(body) => Err(format!("{status}: {}", String::from_utf8_lossy(&body))),
                    Err(error) => Err(format!("read body: {error}")),
                }
            }
            Err(error) => Err(format!("send: {error}")),
        };
        let done = Instant::now();
        seq += 1;
        let in_window = done >= window_start && done <= window_end;
        match outcome {
            Ok(()) if in_window => result
                .latencies_us
                .push(done.duration_since(sent).as_micros() as u64),
            Ok(()) => {}
            Err(error) => {
                if in_window {
                    result.errors += 1;
                }
                if result.first_error.is_none() {
                    result.first_error = Some(error);
                }
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    result
}

fn percentile_ms(sorted_us: &[u64], quantile: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    // Nearest rank: the smallest value with at least `quantile` of the samples at or below it.
    let rank = ((quantile * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

fn main() {
    let args = parse_args();
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("build the runtime");
    let results = runtime.block_on(async {
        let start = Instant::now();
        let window_start = start + Duration::from_secs(args.warmup_s);
        let window_end = window_start + Duration::from_secs(args.duration_s);
        let tasks: Vec<_> = (0..args.clients)
            .map(|client| tokio::spawn(run_client(args.clone(), client, window_start, window_end)))
            .collect();
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await.expect("client task"));
        }
        results
    });
    let mut latencies_us: Vec<u64> = results
        .iter()
        .flat_map(|result| result.latencies_us.iter().copied())
        .collect();
    latencies_us.sort_unstable();
    let errors: u64 = results.iter().map(|result| result.errors).sum();
    let first_error = results
        .iter()
        .find_map(|result| result.first_error.clone())
        .unwrap_or_default();
    let ops = latencies_us.len();
    let ops_per_s = ops as f64 / args.duration_s as f64;
    let mean_ms = if ops == 0 {
        f64::NAN
    } else {
        latencies_us.iter().sum::<u64>() as f64 / ops as f64 / 1000.0
    };
    let (p50, p90, p99, p999, max) = (
        percentile_ms(&latencies_us, 0.50),
        percentile_ms(&latencies_us, 0.90),
        percentile_ms(&latencies_us, 0.99),
        percentile_ms(&latencies_us, 0.999),
        percentile_ms(&latencies_us, 1.0),
    );
    // Writes slower than 50 ms: half a Raft tick of the agent (100 ms).
    let over_50ms = latencies_us.iter().filter(|&&us| us > 50_000).count();
    let system = match args.system {
        System::Shoal => "shoal",
        System::Etcd => "etcd",
    };
    eprintln!(
        "{:<28} clients {:>4}: {:>8.0} ops/s  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms  errors {}",
        args.label, args.clients, ops_per_s, p50, p90, p99, max, errors
    );
    if !first_error.is_empty() {
        eprintln!("  first error: {}", first_error.chars().take(300).collect::<String>());
    }
    let escaped = first_error
        .chars()
        .take(300)
        .collect::<String>()
        .replace('\\', "\\\\")
        .replace('"', "'")
        .replace(['\n', '\r'], " ");
    println!(
        "{{\"label\":\"{}\",\"system\":\"{system}\",\"url\":\"{}\",\"clients\":{},\"duration_s\":{},\"ops\":{ops},\"errors\":{errors},\"ops_per_s\":{ops_per_s:.1},\"mean_ms\":{mean_ms:.3},\"p50_ms\":{p50:.3},\"p90_ms\":{p90:.3},\"p99_ms\":{p99:.3},\"p999_ms\":{p999:.3},\"max_ms\":{max:.3},\"over_50ms\":{over_50ms},\"first_error\":\"{escaped}\"}}",
        args.label, args.url, args.clients, args.duration_s
    );
}
