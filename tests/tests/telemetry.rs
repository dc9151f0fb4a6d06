//! Telemetry and alerts through real agents on loopback (issue #3): what a
//! database pushes to its agent reaches every agent, alert rules fire and
//! clear everywhere, bad reports are refused and change nothing, and a dead
//! agent's record stops changing and ages.
//!
//! Every test runs its own cluster (see `shoal_tests`) with a short record
//! refresh, a short heartbeat (a live agent writes a new record version at
//! least every 2 s even when its host metrics hold still, which the dead
//! agent test relies on) and a short `for_at_least` on the replication-lag
//! rule, so the waits are short; nothing asserts how long anything takes.
//!
//! A removed node's record being forgotten is checked through the API
//! (`shoal node remove`); how long its tombstone keeps the record from
//! coming back is left to the membership crate's unit tests.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use shoal_tests::{Cluster, TIMEOUT, wait_until};

/// Telemetry and alert settings of every agent in these tests.
const CONFIG: &str = r#"
[telemetry]
refresh_interval = "500ms"
heartbeat_interval = "2s"
[alerts.replication_lag]
lag_ms_max = 5000
for_at_least = "2s"
"#;

fn start(name: &str, members: usize) -> Cluster {
    Cluster::builder(name)
        .seeds(3)
        .members(members)
        .config(CONFIG)
        .start()
        .expect("start the cluster")
}

/// A valid report with `replication_lag_ms = lag_ms`.
fn report(qps: f64, lag_ms: u64) -> Value {
    json!({
        "qps": qps,
        "latency_p50_us": 800,
        "latency_p99_us": 4200,
        "replication_lag_ms": lag_ms,
        "shards": {
            "17": {
                "size_bytes": 1_048_576,
                "qps": 300.5,
                "applied_position": 99_812,
                "role": "primary",
                "epoch": 4
            }
        },
        "schema_versions": {"orders": 7}
    })
}

/// `PUT /v1/agent/telemetry` at `node_id`; fails unless accepted.
fn push(cluster: &Cluster, node_id: &str, report: &Value) {
    let answer = cluster
        .call(node_id, "PUT", "/v1/agent/telemetry")
        .json(report)
        .send()
        .unwrap()
        .ok()
        .unwrap_or_else(|error| panic!("push to {node_id}: {error:#}"));
    assert_eq!(answer, json!({"accepted": true}));
}

/// `node_id`'s record as `observer` holds it.
fn record_of(cluster: &Cluster, observer: &str, node_id: &str) -> Result<Value> {
    cluster
        .call(observer, "GET", &format!("/v1/telemetry?node={node_id}"))
        .timeout(shoal_tests::HTTP_TIMEOUT)
        .send()?
        .ok()
        .with_context(|| format!("{node_id}'s record at {observer}"))
}

/// A record's `(generation, sequence)`.
fn version(record: &Value) -> (u64, u64) {
    let version = &record["version"];
    (
        version["generation"].as_u64().unwrap_or(0),
        version["sequence"].as_u64().unwrap_or(0),
    )
}

/// Waits until every agent of `observers` holds a record of `node_id` whose
/// database report equals `expected`.
fn wait_report_everywhere(
    cluster: &Cluster,
    observers: &[String],
    node_id: &str,
    expected: &Value,
) {
    for observer in observers {
        wait_until(
            TIMEOUT,
            &format!("{observer} to hold {node_id}'s report {expected}"),
            || {
                let record = record_of(cluster, observer, node_id)?;
                ensure!(record["database"]["report"] == *expected, "record {record}");
                Ok(())
            },
        );
    }
}

/// The replication-lag alerts for `node_id` that `observer` lists.
fn lag_alerts(cluster: &Cluster, observer: &str, node_id: &str) -> Result<Vec<Value>> {
    let alerts = cluster
        .call(observer, "GET", "/v1/alerts")
        .timeout(shoal_tests::HTTP_TIMEOUT)
        .send()?
        .ok()?;
    let alerts = alerts
        .as_array()
        .with_context(|| format!("alerts at {observer} are not an array: {alerts}"))?;
    Ok(alerts
        .iter()
        .filter(|alert| alert["rule"] == "replication_lag" && alert["node_id"] == node_id)
        .cloned()
        .collect())
}

fn ids(cluster: &Cluster) -> Vec<String> {
    cluster
        .nodes()
        .iter()
        .map(|node| node.node_id.clone())
        .collect()
}

#[test]
fn a_report_pushed_to_one_agent_is_read_at_every_agent() {
    let cluster = start("telemetry-spread", 2);
    let all = ids(&cluster);
    let pushed = report(1234.5, 12);
    push(&cluster, "node-4", &pushed);

    let others: Vec<String> = all.iter().filter(|id| *id != "node-4").cloned().collect();
    wait_report_everywhere(&cluster, &all, "node-4", &pushed);
    for observer in &others {
        let record = record_of(&cluster, observer, "node-4").unwrap();
        assert_eq!(record["node_id"], "node-4", "at {observer}: {record}");
        assert_eq!(version(&record).0, 1, "generation at {observer}: {record}");
        assert!(record["age_ms"].is_u64(), "at {observer}: {record}");
        assert!(
            record["database"]["report_age_ms"].is_u64(),
            "at {observer}: {record}"
        );
    }

    // Every agent holds every node's record, host metrics included.
    for observer in &all {
        wait_until(
            TIMEOUT,
            &format!("{observer} to hold host metrics of every node"),
            || {
                let map = cluster
                    .call(observer, "GET", "/v1/telemetry")
                    .timeout(shoal_tests::HTTP_TIMEOUT)
                    .send()?
                    .ok()?;
                for node_id in &all {
                    let host = &map[node_id]["host"];
                    ensure!(
                        host["memory_total_bytes"].as_u64().unwrap_or(0) > 0
                            && host["disk_capacity_bytes"].as_u64().unwrap_or(0) > 0
                            && host["cpu_percent"].is_number(),
                        "{node_id}'s host metrics: {host}"
                    );
                    ensure!(
                        map[node_id]["agent_version"].is_string(),
                        "{node_id}: {}",
                        map[node_id]
                    );
                }
                let listed = map.as_object().map(|map| map.len()).unwrap_or(0);
                ensure!(listed == all.len(), "{listed} records");
                Ok(())
            },
        );
    }
    // Nodes whose database said nothing carry no report.
    let record = record_of(&cluster, "node-4", "node-1").unwrap();
    assert!(record["database"].is_null(), "{record}");

    // A newer report replaces the old one everywhere; the CLI shows it.
    let newer = report(99.0, 3);
    push(&cluster, "node-4", &newer);
    wait_report_everywhere(&cluster, &all, "node-4", &newer);
    let stdout = cluster
        .cli_ok("node-2", None, ["telemetry", "--node", "node-4", "--json"])
        .unwrap();
    let shown: Value = serde_json::from_str(&stdout).expect("telemetry --json");
    assert_eq!(shown["database"]["report"], newer, "{shown}");
}

#[test]
fn a_replication_lag_alert_fires_and_clears_at_every_agent() {
    let cluster = start("telemetry-alerts", 2);
    let all = ids(&cluster);
    push(&cluster, "node-5", &report(10.0, 60_000));

    for observer in &all {
        let alert = wait_until(
            TIMEOUT,
            &format!("{observer} to list the replication_lag alert of node-5"),
            || {
                let alerts = lag_alerts(&cluster, observer, "node-5")?;
                ensure!(alerts.len() == 1, "alerts {alerts:?}");
                Ok(alerts[0].clone())
            },
        );
        assert_eq!(alert["value"], 60_000.0, "at {observer}: {alert}");
        assert_eq!(alert["threshold"], 5000.0, "at {observer}: {alert}");
        assert_eq!(alert["unit"], "ms", "at {observer}: {alert}");
        assert!(alert["since_ms_ago"].is_u64(), "at {observer}: {alert}");
        // Only the lagging node.
        for node_id in all.iter().filter(|id| *id != "node-5") {
            let alerts = lag_alerts(&cluster, observer, node_id).unwrap();
            assert!(alerts.is_empty(), "at {observer}: {alerts:?}");
        }
        let firing = cluster
            .metric(observer, "shoal_alerts_firing{rule=\"replication_lag\"}")
            .unwrap();
        assert_eq!(firing, 1.0, "at {observer}");
    }
    let stdout = cluster
        .cli_ok("node-1", None, ["alerts", "--json"])
        .unwrap();
    let listed: Value = serde_json::from_str(&stdout).expect("alerts --json");
    assert!(
        listed.as_array().is_some_and(|alerts| alerts
            .iter()
            .any(|alert| alert["rule"] == "replication_lag" && alert["node_id"] == "node-5")),
        "{listed}"
    );

    // Healthy again: the alert clears everywhere.
    push(&cluster, "node-5", &report(10.0, 20));
    for observer in &all {
        wait_until(
            TIMEOUT,
            &format!("{observer} to clear the replication_lag alert of node-5"),
            || {
                let alerts = lag_alerts(&cluster, observer, "node-5")?;
                ensure!(alerts.is_empty(), "alerts {alerts:?}");
                Ok(())
            },
        );
        let firing = cluster
            .metric(observer, "shoal_alerts_firing{rule=\"replication_lag\"}")
            .unwrap();
        assert_eq!(firing, 0.0, "at {observer}");
    }
}

#[test]
fn invalid_reports_are_refused_naming_the_field_and_change_nothing() {
    let cluster = start("telemetry-invalid", 1);
    let all = ids(&cluster);
    let good = report(50.0, 5);
    push(&cluster, "node-2", &good);
    wait_report_everywhere(&cluster, &all, "node-2", &good);

    let with = |field: &str, value: Value| {
        let mut body = report(50.0, 5);
        body[field] = value;
        body.to_string()
    };
    let mut bad_shard = report(50.0, 5);
    bad_shard["shards"]["17"]["qps"] = json!(-3.0);
    let mut missing = report(50.0, 5);
    missing.as_object_mut().unwrap().remove("qps");
    // (what, body, what the message must name)
    let cases = [
        ("negative qps", with("qps", json!(-1.0)), "qps"),
        (
            "p50 above p99",
            with("latency_p50_us", json!(5000)),
            "latency_p50_us",
        ),
        ("an unknown field", with("colour", json!("red")), "colour"),
        (
            "a negative lag",
            with("replication_lag_ms", json!(-5)),
            "replication_lag_ms",
        ),
        ("a missing field", missing.to_string(), "qps"),
        (
            "a negative shard qps",
            bad_shard.to_string(),
            "shards.17.qps",
        ),
        ("not JSON", "qps=12".to_string(), ""),
        ("an array", "[1, 2, 3]".to_string(), ""),
    ];
    let mut failures = Vec::new();
    for (what, body, names) in &cases {
        let reply = cluster
            .call("node-2", "PUT", "/v1/agent/telemetry")
            .raw_json(body)
            .send()
            .unwrap();
        match reply.expect_error(400, "bad_request") {
            Ok(message) if message.contains(names) => {}
            Ok(message) => {
                failures.push(format!("{what}: message does not name {names}: {message}"))
            }
            Err(error) => failures.push(format!("{what}: {error:#}")),
        }
    }

    // Two refreshes later, the record still carries the good report, here
    // and elsewhere.
    let refused_at = version(&record_of(&cluster, "node-2", "node-2").unwrap());
    for observer in &all {
        let record = wait_until(
            TIMEOUT,
            &format!("{observer} to hold a record of node-2 newer than {refused_at:?} + 1"),
            || {
                let record = record_of(&cluster, observer, "node-2")?;
                ensure!(
                    version(&record).1 >= refused_at.1 + 2,
                    "version {:?}",
                    version(&record)
                );
                Ok(record)
            },
        );
        assert_eq!(
            record["database"]["report"], good,
            "a refused report got into node-2's record at {observer}"
        );
    }
    assert_eq!(cluster.health("node-2").unwrap()["status"], "ok");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_dead_agents_record_stops_changing_and_ages() {
    let cluster = start("telemetry-dead", 1);
    // Every node registered, so that node-4 can be removed later.
    cluster.wait_catalog_ready();
    let observers: Vec<String> = ["node-1", "node-2", "node-3"].map(String::from).to_vec();
    let all = ids(&cluster);
    let pushed = report(7.0, 1);
    push(&cluster, "node-4", &pushed);
    wait_report_everywhere(&cluster, &all, "node-4", &pushed);

    cluster.kill("node-4");
    // Its record stays, with its last report, and stops changing; a live
    // node's keeps changing meanwhile.
    let last: Vec<(u64, u64)> = observers
        .iter()
        .map(|observer| version(&record_of(&cluster, observer, "node-4").unwrap()))
        .collect();
    let live: Vec<(u64, u64)> = observers
        .iter()
        .map(|observer| version(&record_of(&cluster, observer, "node-1").unwrap()))
        .collect();
    // Wait until every observer saw node-1 publish 4 more records: node-4
    // would have published as many had it lived (a heartbeat every 2 s).
    for (observer, live) in observers.iter().zip(&live) {
        wait_until(
            TIMEOUT,
            &format!("{observer} to see 4 newer records of node-1 than {live:?}"),
            || {
                let now = version(&record_of(&cluster, observer, "node-1")?);
                ensure!(now.1 >= live.1 + 4, "node-1 at {now:?}");
                Ok(())
            },
        );
    }
    let mut final_versions = Vec::new();
    for (observer, last) in observers.iter().zip(&last) {
        let first = record_of(&cluster, observer, "node-4").unwrap();
        // A delta in flight at the kill may still have arrived; after it,
        // nothing more.
        assert!(version(&first) >= *last, "at {observer}: {first}");
        assert_eq!(
            first["database"]["report"], pushed,
            "at {observer}: {first}"
        );
        let first_age = first["age_ms"].as_u64().expect("age_ms");
        // Older by a second more, while a live node's record stays young.
        let record = wait_until(
            TIMEOUT,
            &format!("node-4's age_ms at {observer} to grow past {first_age} + 1000"),
            || {
                let record = record_of(&cluster, observer, "node-4")?;
                let age = record["age_ms"].as_u64().unwrap_or(0);
                ensure!(age > first_age + 1000, "age_ms {age}");
                Ok(record)
            },
        );
        let live = record_of(&cluster, observer, "node-1").unwrap();
        assert!(
            live["age_ms"].as_u64().unwrap() < record["age_ms"].as_u64().unwrap(),
            "at {observer}: node-1 {live} is older than dead node-4 {record}"
        );
        assert_eq!(
            version(&record),
            version(&first),
            "node-4's record changed at {observer} after its agent died"
        );
        final_versions.push(version(&record));
    }
    // Every observer holds the same last version of the dead node's record.
    final_versions.dedup();
    assert_eq!(final_versions.len(), 1, "{final_versions:?}");
    // And the metric ages it too.
    let age = cluster
        .metric("node-1", "shoal_telemetry_age_seconds{node=\"node-4\"}")
        .unwrap();
    assert!(age > 0.0, "shoal_telemetry_age_seconds of node-4: {age}");

    // Removed from the catalog (by an operator, through the CLI), the dead
    // node's record is forgotten by every agent; the others' stay.
    let admin = cluster.bootstrap_acl("node-1").unwrap();
    let operator = cluster
        .create_token("node-2", &admin.token, "operator")
        .unwrap();
    // The lifecycle is enforced: an active node is not removed at once.
    cluster
        .call("node-3", "POST", "/v1/nodes/node-4/status")
        .token(&operator.token)
        .json(&json!({"status": "removed"}))
        .send()
        .unwrap()
        .expect_error(409, "invalid_transition")
        .unwrap();
    cluster
        .cli_ok(
            "node-3",
            Some(&operator.token),
            ["node", "remove", "node-4"],
        )
        .unwrap();
    for observer in &observers {
        wait_until(
            TIMEOUT,
            &format!("{observer} to forget node-4's telemetry"),
            || {
                let reply = cluster
                    .call(observer, "GET", "/v1/telemetry?node=node-4")
                    .timeout(shoal_tests::HTTP_TIMEOUT)
                    .send()?;
                ensure!(reply.status == 404, "{} {}", reply.status, reply.text());
                reply.expect_error(404, "not_found")?;
                Ok(())
            },
        );
        let map = cluster
            .call(observer, "GET", "/v1/telemetry")
            .send()
            .unwrap()
            .ok()
            .unwrap();
        let listed: Vec<&String> = map.as_object().unwrap().keys().collect();
        assert_eq!(listed, ["node-1", "node-2", "node-3"], "at {observer}");
        let catalog = cluster.catalog(observer).unwrap();
        assert_eq!(
            catalog["state"]["nodes"]["node-4"]["status"], "removed",
            "at {observer}"
        );
    }
}
