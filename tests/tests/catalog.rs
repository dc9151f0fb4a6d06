//! The catalog through real agents on loopback (issue #4): writes through
//! any agent, reads everywhere (local and `?consistent`), leader loss, a
//! whole-cluster restart, a minority that must refuse writes, backup and
//! restore, tokens and roles, bad API input, and the seed group's view.
//!
//! Every test runs its own cluster of 3 seeds and 1–2 members with ACLs on
//! (the default); see `shoal_tests` for the harness. Nothing here asserts
//! how long anything takes: the agents' own deadlines (a write or a read
//! barrier gives up after 10–15 s) bound the waits, and [`TIMEOUT`] bounds
//! how long a broken run hangs.

use std::collections::BTreeSet;

use anyhow::{Result, bail, ensure};
use serde_json::{Value, json};
use shoal_tests::{Cluster, Reply, TIMEOUT, Token, wait_until};

/// Boots `seeds` + `members` agents, waits until the seed group formed and
/// every agent registered (and every catalog copy shows it), and returns
/// the cluster with ACLs still not bootstrapped.
fn ready_cluster(name: &str, members: usize) -> Cluster {
    let cluster = Cluster::builder(name)
        .seeds(3)
        .members(members)
        .start()
        .expect("start the cluster");
    cluster.wait_catalog_ready();
    cluster
}

/// [`ready_cluster`], plus the first admin token (bootstrapped through the
/// first member).
fn ready_cluster_with_admin(name: &str, members: usize) -> (Cluster, Token) {
    let cluster = ready_cluster(name, members);
    let admin = cluster
        .bootstrap_acl("node-4")
        .expect("bootstrap the ACL at node-4");
    assert_eq!(admin.role, "admin");
    (cluster, admin)
}

/// Ids of every node of the cluster (all running).
fn all_ids(cluster: &Cluster) -> Vec<String> {
    cluster
        .nodes()
        .iter()
        .map(|node| node.node_id.clone())
        .collect()
}

fn as_strs(ids: &[String]) -> Vec<&str> {
    ids.iter().map(String::as_str).collect()
}

/// Sets `key` to `value` through `node_id` with a fixed request id,
/// retrying while the agent answers 503 (no leader yet): the request id
/// makes the retries idempotent. Any other refusal fails the test. Returns
/// the 200 answer.
fn set_config_retrying(
    cluster: &Cluster,
    node_id: &str,
    token: &str,
    key: &str,
    value: &str,
    request_id: &str,
) -> Value {
    wait_until(
        TIMEOUT,
        &format!("{key}={value} (request {request_id}) to be accepted through {node_id}"),
        || {
            let reply = cluster
                .call(node_id, "PUT", &format!("/v1/config/{key}"))
                .token(token)
                .request_id(request_id)
                .json(&json!({"value": value}))
                .send()?;
            if reply.status == 503 {
                // Refused for now; a JSON error all the same.
                reply.expect_error(503, "unavailable")?;
                bail!("503: {}", reply.text());
            }
            Ok(reply.ok().unwrap_or_else(|error| panic!("{error:#}")))
        },
    )
}

/// `GET /v1/config/KEY?consistent` at `node_id`.
fn consistent_get(cluster: &Cluster, node_id: &str, key: &str) -> Result<Reply> {
    cluster
        .call(node_id, "GET", &format!("/v1/config/{key}?consistent"))
        .send()
}

/// Waits until every agent of `node_ids` has the same catalog index and
/// chain hash in its local copy; returns one of those catalogs.
fn wait_catalogs_agree(cluster: &Cluster, node_ids: &[&str]) -> Value {
    wait_until(
        TIMEOUT,
        &format!("{node_ids:?} to hold the same catalog (index and chain hash)"),
        || {
            let mut seen = BTreeSet::new();
            let mut last = Value::Null;
            for node_id in node_ids {
                let catalog = cluster.catalog(node_id)?;
                seen.insert((
                    catalog["index"].as_u64().unwrap_or(0),
                    catalog["chain_hash"].to_string(),
                ));
                last = catalog;
            }
            ensure!(seen.len() == 1, "(index, chain hash) seen: {seen:?}");
            Ok(last)
        },
    )
}

/// The whole audit trail at `node_id` (up to its 10,000-record limit).
fn audit(cluster: &Cluster, node_id: &str, token: &str, query: &str) -> Vec<Value> {
    let reply = cluster
        .call(node_id, "GET", &format!("/v1/audit?limit=10000{query}"))
        .token(token)
        .send()
        .unwrap();
    let body = reply.ok().unwrap();
    body.as_array()
        .unwrap_or_else(|| panic!("audit is not an array: {body}"))
        .clone()
}

#[test]
fn writes_through_a_member_are_read_at_every_agent() {
    let (cluster, admin) = ready_cluster_with_admin("catalog-writes", 2);
    let ids = all_ids(&cluster);

    let reply = cluster
        .set_config("node-4", Some(&admin.token), "feature.x", "on")
        .unwrap();
    let answer = reply.ok().unwrap();
    assert_eq!(answer["key"], "feature.x", "{answer}");
    assert_eq!(answer["version"], 1, "{answer}");
    let index = answer["index"].as_u64().expect("the write's index");
    assert_eq!(reply.header_u64("x-shoal-index").unwrap(), index);

    // Read-your-writes at the agent that answered, without waiting.
    let local = cluster
        .call("node-4", "GET", "/v1/config/feature.x")
        .send()
        .unwrap();
    assert_eq!(local.ok().unwrap()["value"], "on");
    assert!(local.header_u64("x-shoal-index").unwrap() >= index);

    // A consistent read right after the write sees it at every agent.
    for node_id in &ids {
        let reply = consistent_get(&cluster, node_id, "feature.x").unwrap();
        let entry = reply.ok().unwrap();
        assert_eq!(entry["value"], "on", "at {node_id}: {entry}");
        assert_eq!(entry["version"], 1, "at {node_id}: {entry}");
        let seen = reply.header_u64("x-shoal-index").unwrap();
        assert!(seen >= index, "at {node_id}: index {seen} < {index}");
    }
    // So does a local read, eventually (every catalog copy catches up).
    for node_id in &ids {
        wait_until(
            TIMEOUT,
            &format!("feature.x=on in {node_id}'s local catalog"),
            || {
                let reply = cluster.get(node_id, "/v1/config/feature.x")?;
                ensure!(reply.0 == 200, "{} {}", reply.0, reply.1);
                let entry: Value = serde_json::from_str(&reply.1)?;
                ensure!(entry["value"] == "on", "{entry}");
                Ok(())
            },
        );
        let reply = cluster.call(node_id, "GET", "/v1/config").send().unwrap();
        let seen = reply.header_u64("x-shoal-index").unwrap();
        assert!(seen >= index, "at {node_id}: index {seen} < {index}");
        assert_eq!(
            reply.ok().unwrap()["feature.x"],
            json!({"value": "on", "version": 1})
        );
    }

    // A compare-and-set through the other member, then a stale one.
    let second = cluster
        .call("node-5", "PUT", "/v1/config/feature.x")
        .token(&admin.token)
        .json(&json!({"value": "off", "expected_version": 1}))
        .send()
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(second["version"], 2, "{second}");
    assert!(second["index"].as_u64().unwrap() > index, "{second}");
    cluster
        .call("node-2", "PUT", "/v1/config/feature.x")
        .token(&admin.token)
        .json(&json!({"value": "stale", "expected_version": 1}))
        .send()
        .unwrap()
        .expect_error(409, "version_mismatch")
        .unwrap();

    // The history, with who wrote it, at every agent.
    for node_id in &ids {
        let entry = consistent_get(&cluster, node_id, "feature.x")
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(entry["value"], "off", "at {node_id}: {entry}");
        let history: Vec<(u64, &str, &str)> = entry["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|old| {
                (
                    old["version"].as_u64().unwrap(),
                    old["value"].as_str().unwrap(),
                    old["actor"].as_str().unwrap(),
                )
            })
            .collect();
        let actor = format!("token:{}", admin.token_id);
        assert_eq!(
            history,
            [(1, "on", actor.as_str()), (2, "off", actor.as_str())],
            "at {node_id}"
        );
    }

    // The CLI: set through a seed, read and list the history through a member.
    cluster
        .cli_ok(
            "node-3",
            Some(&admin.token),
            ["config", "set", "feature.x", "again"],
        )
        .unwrap();
    let got = cluster
        .cli_ok(
            "node-5",
            None,
            ["config", "get", "feature.x", "--consistent", "--json"],
        )
        .unwrap();
    let got: Value = serde_json::from_str(&got).expect("config get --json");
    assert_eq!(
        (got["value"].clone(), got["version"].clone()),
        (json!("again"), json!(3))
    );
    let history = cluster
        .cli_ok(
            "node-4",
            None,
            ["config", "history", "feature.x", "--consistent", "--json"],
        )
        .unwrap();
    let history: Value = serde_json::from_str(&history).expect("config history --json");
    assert_eq!(history.as_array().map(Vec::len), Some(3), "{history}");
}

#[test]
fn a_killed_leader_is_replaced_and_writes_through_a_member_go_on() {
    let (cluster, admin) = ready_cluster_with_admin("catalog-leader-kill", 1);
    let ids = all_ids(&cluster);
    cluster
        .set_config("node-4", Some(&admin.token), "before", "1")
        .unwrap()
        .ok()
        .unwrap();

    let old_leader = cluster.wait_leader(&as_strs(&ids), None);
    let old_term = cluster.seeds_status(&old_leader).unwrap()["term"]
        .as_u64()
        .expect("a seed reports its term");
    cluster.kill(&old_leader);

    let survivors: Vec<String> = ids
        .iter()
        .filter(|id| **id != old_leader)
        .cloned()
        .collect();
    let new_leader = cluster.wait_leader(&as_strs(&survivors), Some(&old_leader));
    let new_term = cluster.seeds_status(&new_leader).unwrap()["term"]
        .as_u64()
        .unwrap();
    assert!(
        new_term > old_term,
        "term {new_term} under {new_leader}, {old_term} under {old_leader}"
    );

    // Writes through the member go on; retries under one request id (the
    // first tries may land in the election) apply once.
    let answer = set_config_retrying(&cluster, "node-4", &admin.token, "after", "1", "after-1");
    assert_eq!(answer["version"], 1, "{answer}");
    let answer = set_config_retrying(&cluster, "node-4", &admin.token, "after", "2", "after-2");
    assert_eq!(answer["version"], 2, "{answer}");

    for node_id in &survivors {
        for (key, value, version) in [("before", "1", 1), ("after", "2", 2)] {
            let entry = consistent_get(&cluster, node_id, key)
                .unwrap()
                .ok()
                .unwrap();
            assert_eq!(
                (entry["value"].as_str(), entry["version"].as_u64()),
                (Some(value), Some(version)),
                "{key} at {node_id}: {entry}"
            );
        }
    }
}

#[test]
fn a_restarted_cluster_keeps_its_catalog() {
    let (cluster, admin) = ready_cluster_with_admin("catalog-restart", 1);
    let ids = all_ids(&cluster);
    for (node_id, key, value) in [
        ("node-4", "alpha", "1"),
        ("node-1", "alpha", "2"),
        ("node-2", "beta", "x"),
        ("node-4", "gamma", "y"),
    ] {
        cluster
            .set_config(node_id, Some(&admin.token), key, value)
            .unwrap()
            .ok()
            .unwrap();
    }
    let before = wait_catalogs_agree(&cluster, &as_strs(&ids));
    let index_before = before["index"].as_u64().unwrap();
    let audit_before = audit(&cluster, "node-1", &admin.token, "");
    assert!(!audit_before.is_empty());

    for (node_id, status) in ids.iter().zip(cluster.terminate_nodes(&as_strs(&ids))) {
        assert!(
            status.success(),
            "{node_id} exited with {status} on SIGTERM"
        );
    }
    cluster.start_nodes(&as_strs(&ids));
    cluster.wait_converged();
    // Every node registered again, with generation 2, in every catalog.
    cluster.wait_catalog_ready();
    let after = wait_catalogs_agree(&cluster, &as_strs(&ids));
    let index_after = after["index"].as_u64().unwrap();
    assert!(
        index_after > index_before,
        "index {index_after} after, {index_before} before"
    );

    assert_eq!(
        after["state"]["config"], before["state"]["config"],
        "the config and its history changed across the restart"
    );
    assert_eq!(after["state"]["tokens"], before["state"]["tokens"]);
    for node_id in &ids {
        let node = &after["state"]["nodes"][node_id];
        assert_eq!(node["generation"], 2, "{node_id}: {node}");
        assert_eq!(node["status"], "active", "{node_id}: {node}");
        assert_eq!(
            node["registered_at_unix_ms"],
            before["state"]["nodes"][node_id]["registered_at_unix_ms"],
            "{node_id} was registered anew instead of updated"
        );
    }
    // The audit trail up to the restart is the same, record for record.
    let audit_after = audit(&cluster, "node-4", &admin.token, "");
    let kept: Vec<&Value> = audit_after
        .iter()
        .filter(|record| record["index"].as_u64().unwrap() <= index_before)
        .collect();
    let expected: Vec<&Value> = audit_before.iter().collect();
    assert_eq!(kept, expected, "the audit trail changed across the restart");
    // The old token still works; the values read back through the CLI.
    cluster
        .set_config("node-4", Some(&admin.token), "delta", "z")
        .unwrap()
        .ok()
        .unwrap();
    let got = cluster
        .cli_ok("node-2", None, ["config", "get", "alpha", "--consistent"])
        .unwrap();
    assert_eq!(got.trim(), "2");
}

#[test]
fn a_minority_refuses_writes_and_consistent_reads() {
    let (cluster, admin) = ready_cluster_with_admin("catalog-minority", 1);
    let ids = all_ids(&cluster);
    cluster
        .set_config("node-4", Some(&admin.token), "before", "1")
        .unwrap()
        .ok()
        .unwrap();

    // Keep the leader and stop the two other seeds: the leader is left
    // without a quorum.
    let leader = cluster.wait_leader(&as_strs(&ids), None);
    let stopped: Vec<String> = ["node-1", "node-2", "node-3"]
        .into_iter()
        .filter(|id| *id != leader)
        .map(str::to_string)
        .collect();
    cluster.pause_nodes(&as_strs(&stopped));

    // Both writes and both reads run at once: each may take the agent's
    // whole deadline.
    let (writes, reads) = std::thread::scope(|scope| {
        let writes: Vec<_> = [leader.as_str(), "node-4"]
            .into_iter()
            .map(|node_id| {
                let cluster = &cluster;
                let token = admin.token.as_str();
                scope.spawn(move || {
                    let reply = cluster
                        .call(node_id, "PUT", "/v1/config/minority")
                        .token(token)
                        .request_id(&format!("minority-{node_id}"))
                        .json(&json!({"value": node_id}))
                        .send()
                        .unwrap();
                    (node_id, reply)
                })
            })
            .collect();
        let reads: Vec<_> = [leader.as_str(), "node-4"]
            .into_iter()
            .map(|node_id| {
                let cluster = &cluster;
                scope.spawn(move || (node_id, consistent_get(cluster, node_id, "before").unwrap()))
            })
            .collect();
        (
            writes
                .into_iter()
                .map(|thread| thread.join().unwrap())
                .collect::<Vec<_>>(),
            reads
                .into_iter()
                .map(|thread| thread.join().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    for (node_id, reply) in writes.iter().chain(&reads) {
        let message = reply
            .expect_error(503, "unavailable")
            .unwrap_or_else(|error| panic!("at {node_id} without a quorum: {error:#}"));
        assert!(!message.is_empty());
    }
    // Nothing of the refused writes is visible while the quorum is gone.
    for node_id in [leader.as_str(), "node-4"] {
        let (status, body) = cluster.get(node_id, "/v1/config/minority").unwrap();
        assert_eq!(status, 404, "at {node_id}: {body}");
        let (status, body) = cluster.get(node_id, "/v1/config/before").unwrap();
        assert_eq!(status, 200, "local reads still answer at {node_id}: {body}");
    }

    cluster.resume_nodes(&as_strs(&stopped));
    cluster.wait_leader(&as_strs(&ids), None);
    // The refused writes, retried under their request ids, apply once (a
    // refused write may still have committed: then its retry gets the
    // first result).
    let first = set_config_retrying(
        &cluster,
        &leader,
        &admin.token,
        "minority",
        &leader,
        &format!("minority-{leader}"),
    );
    let second = set_config_retrying(
        &cluster,
        "node-4",
        &admin.token,
        "minority",
        "node-4",
        "minority-node-4",
    );
    let versions = BTreeSet::from([
        first["version"].as_u64().unwrap(),
        second["version"].as_u64().unwrap(),
    ]);
    assert_eq!(versions, BTreeSet::from([1, 2]), "{first} {second}");
    let entry = consistent_get(&cluster, "node-4", "minority")
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(entry["version"], 2, "{entry}");
    assert_eq!(
        entry["history"].as_array().map(Vec::len),
        Some(2),
        "{entry}"
    );
}

#[test]
fn a_backup_restores_the_catalog_and_garbage_is_refused() {
    let (cluster, admin) = ready_cluster_with_admin("catalog-backup", 1);
    let ids = all_ids(&cluster);
    for (key, value) in [("one", "1"), ("two", "2"), ("three", "3"), ("one", "1b")] {
        cluster
            .set_config("node-4", Some(&admin.token), key, value)
            .unwrap()
            .ok()
            .unwrap();
    }
    let at_backup = cluster
        .call("node-1", "GET", "/v1/catalog?consistent")
        .send()
        .unwrap()
        .ok()
        .unwrap();

    let backup = cluster
        .call("node-4", "POST", "/v1/catalog/backup")
        .token(&admin.token)
        .send()
        .unwrap();
    assert_eq!(backup.status, 200, "{}", backup.text());
    assert!(!backup.body.is_empty());
    let backup_index = backup.header_u64("x-shoal-index").unwrap();
    assert!(backup_index >= at_backup["index"].as_u64().unwrap());
    // The CLI takes the same backup (nothing was written in between).
    let file = cluster.dir().join("catalog.backup");
    cluster
        .cli_ok(
            "node-2",
            Some(&admin.token),
            ["catalog".as_ref(), "backup".as_ref(), file.as_os_str()],
        )
        .unwrap();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        backup.body,
        "CLI backup differs"
    );

    // Change, add, and then restore through the HTTP API.
    for (key, value) in [("one", "changed"), ("four", "4")] {
        cluster
            .set_config("node-4", Some(&admin.token), key, value)
            .unwrap()
            .ok()
            .unwrap();
    }
    let restored = cluster
        .call("node-4", "POST", "/v1/catalog/restore")
        .token(&admin.token)
        .bytes(&backup.body)
        .send()
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(restored["restored_from_index"], backup_index, "{restored}");
    let restore_index = restored["index"].as_u64().unwrap();
    assert!(restore_index > backup_index, "{restored}");

    let expected_config = at_backup["state"]["config"].clone();
    for node_id in &ids {
        let catalog = cluster
            .call(node_id, "GET", "/v1/catalog?consistent")
            .send()
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(
            catalog["state"]["config"], expected_config,
            "at {node_id} after the restore"
        );
        assert!(catalog["index"].as_u64().unwrap() >= restore_index);
        let (status, body) = cluster.get(node_id, "/v1/config/four").unwrap();
        assert_eq!(
            status, 404,
            "four survived the restore at {node_id}: {body}"
        );
    }
    let config = cluster
        .call("node-4", "GET", "/v1/config")
        .send()
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(
        config,
        json!({
            "one": {"value": "1b", "version": 2},
            "three": {"value": "3", "version": 1},
            "two": {"value": "2", "version": 1},
        })
    );
    // The restore is in the audit trail like any command.
    let records = audit(&cluster, "node-1", &admin.token, "&op=restore");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["result"], "ok");
    assert_eq!(records[0]["actor"], format!("token:{}", admin.token_id));

    // Garbage, and a truncated backup, are refused and change nothing.
    let before = cluster
        .call("node-1", "GET", "/v1/catalog?consistent")
        .send()
        .unwrap()
        .ok()
        .unwrap();
    let truncated = &backup.body[..backup.body.len() / 2];
    for (what, bytes) in [
        ("garbage", b"this is not a backup".as_slice()),
        ("a truncated backup", truncated),
        ("nothing", b"".as_slice()),
    ] {
        let message = cluster
            .call("node-4", "POST", "/v1/catalog/restore")
            .token(&admin.token)
            .bytes(bytes)
            .send()
            .unwrap()
            .expect_error(400, "bad_request")
            .unwrap_or_else(|error| panic!("restore of {what}: {error:#}"));
        assert!(message.contains("backup"), "restore of {what}: {message}");
    }
    let garbage = cluster.dir().join("garbage.backup");
    std::fs::write(&garbage, b"garbage").unwrap();
    let output = cluster.cli(
        "node-4",
        Some(&admin.token),
        ["catalog".as_ref(), "restore".as_ref(), garbage.as_os_str()],
    );
    assert!(!output.status.success(), "the CLI restored garbage");
    let after = cluster
        .call("node-1", "GET", "/v1/catalog?consistent")
        .send()
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(
        after["state"], before["state"],
        "a refused restore changed the catalog"
    );
}

#[test]
fn tokens_and_roles_guard_writes_and_the_audit() {
    let cluster = ready_cluster("catalog-acl", 1);
    let put = |token: Option<&str>, value: &str| {
        cluster
            .set_config("node-4", token, "guarded", value)
            .unwrap()
    };
    let absent = |node_id: &str| {
        let (status, body) = consistent_get(&cluster, node_id, "guarded")
            .map(|reply| (reply.status, reply.text()))
            .unwrap();
        assert_eq!(status, 404, "guarded exists at {node_id}: {body}");
    };

    // Before bootstrap no token can exist, and the answer says so, with a
    // token or without. Mismatches are collected so the rest still runs.
    let mut failures = Vec::new();
    for (what, token) in [
        ("no token", None),
        ("a made-up token", Some("shoal_deadbeef_0")),
    ] {
        if let Err(error) = put(token, what).expect_error(401, "acl_not_bootstrapped") {
            failures.push(format!("a write with {what} before bootstrap: {error:#}"));
        }
    }
    absent("node-1");

    // Bootstrap once (through the CLI); a second time is refused.
    let stdout = cluster
        .cli_ok("node-4", None, ["acl", "bootstrap", "--json"])
        .unwrap();
    let admin: Token = serde_json::from_str(&stdout).expect("acl bootstrap --json");
    assert_eq!(admin.role, "admin");
    cluster
        .call("node-2", "POST", "/v1/acl/bootstrap")
        .send()
        .unwrap()
        .expect_error(409, "acl_already_bootstrapped")
        .unwrap();
    let output = cluster.cli("node-1", None, ["acl", "bootstrap"]);
    assert!(
        !output.status.success(),
        "a second bootstrap through the CLI"
    );

    let read = cluster
        .create_token("node-4", &admin.token, "read")
        .unwrap();
    let stdout = cluster
        .cli_ok(
            "node-1",
            Some(&admin.token),
            ["token", "create", "--role", "operator", "--json"],
        )
        .unwrap();
    let operator: Token = serde_json::from_str(&stdout).expect("token create --json");
    assert_eq!(
        (read.role.as_str(), operator.role.as_str()),
        ("read", "operator")
    );

    put(None, "no token")
        .expect_error(401, "unauthorized")
        .unwrap();
    put(Some("shoal_deadbeef_0000"), "unknown")
        .expect_error(401, "unauthorized")
        .unwrap();
    put(Some(&read.token), "read")
        .expect_error(403, "forbidden")
        .unwrap();
    absent("node-4");
    let written = put(Some(&operator.token), "operator").ok().unwrap();
    assert_eq!(written["version"], 1, "{written}");
    put(Some(&read.token), "read again")
        .expect_error(403, "forbidden")
        .unwrap();
    put(None, "no token again")
        .expect_error(401, "unauthorized")
        .unwrap();
    for node_id in ["node-1", "node-4"] {
        let entry = consistent_get(&cluster, node_id, "guarded")
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(
            (entry["value"].as_str(), entry["version"].as_u64()),
            (Some("operator"), Some(1)),
            "at {node_id}: {entry}"
        );
    }
    // An operator may not do an admin's work.
    cluster
        .call("node-4", "POST", "/v1/acl/tokens")
        .token(&operator.token)
        .json(&json!({"role": "admin"}))
        .send()
        .unwrap()
        .expect_error(403, "forbidden")
        .unwrap();
    cluster
        .call("node-4", "POST", "/v1/catalog/backup")
        .token(&operator.token)
        .send()
        .unwrap()
        .expect_error(403, "forbidden")
        .unwrap();

    // The audit needs a token; a read token lists who did what.
    cluster
        .call("node-4", "GET", "/v1/audit")
        .send()
        .unwrap()
        .expect_error(401, "unauthorized")
        .unwrap();
    let records = audit(&cluster, "node-4", &read.token, "&op=set_config");
    let writes: Vec<(&str, &str)> = records
        .iter()
        .map(|record| {
            (
                record["actor"].as_str().unwrap(),
                record["result"].as_str().unwrap(),
            )
        })
        .collect();
    let operator_actor = format!("token:{}", operator.token_id);
    assert_eq!(writes, [(operator_actor.as_str(), "ok")], "{records:?}");
    let records = audit(&cluster, "node-1", &read.token, "");
    let actors: BTreeSet<&str> = records
        .iter()
        .map(|record| record["actor"].as_str().unwrap())
        .collect();
    let admin_actor = format!("token:{}", admin.token_id);
    for actor in [
        "acl-bootstrap",
        admin_actor.as_str(),
        operator_actor.as_str(),
    ] {
        assert!(actors.contains(actor), "no record by {actor}: {actors:?}");
    }
    // Secrets (and their hashes) never show.
    let catalog = cluster.catalog("node-4").unwrap().to_string();
    for token in [&admin, &read, &operator] {
        assert!(!catalog.contains(&token.token), "a secret in the catalog");
    }
    assert!(
        !catalog.contains("secret_sha256"),
        "a token hash in the catalog"
    );
    let stdout = cluster
        .cli_ok(
            "node-4",
            Some(&read.token),
            ["audit", "--op", "set_config", "--json"],
        )
        .unwrap();
    let listed: Value = serde_json::from_str(&stdout).expect("audit --json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A bad request and the JSON error it must get (see [`bad`]).
#[derive(Debug)]
struct BadRequest {
    /// `METHOD PATH`.
    request: &'static str,
    body: Option<&'static str>,
    status: u16,
    code: &'static str,
    /// What the error message must contain.
    names: &'static str,
}

fn bad(
    request: &'static str,
    body: Option<&'static str>,
    status: u16,
    code: &'static str,
    names: &'static str,
) -> BadRequest {
    BadRequest {
        request,
        body,
        status,
        code,
        names,
    }
}

#[test]
fn bad_api_input_gets_json_errors_and_changes_nothing() {
    let (cluster, admin) = ready_cluster_with_admin("catalog-bad-input", 1);
    cluster
        .set_config("node-4", Some(&admin.token), "steady", "1")
        .unwrap()
        .ok()
        .unwrap();
    let state_of = || {
        cluster
            .call("node-1", "GET", "/v1/catalog?consistent")
            .send()
            .unwrap()
            .ok()
            .unwrap()["state"]
            .clone()
    };
    let before = state_of();

    // One case a line: the request, its body (sent as JSON whatever it
    // holds), the status and code expected, what the message must name.
    #[rustfmt::skip]
    let cases = [
        bad("PUT /v1/config/steady", Some(r#"{"value": "#), 400, "bad_request", ""),
        bad("PUT /v1/config/steady", Some("not json at all"), 400, "bad_request", ""),
        bad("PUT /v1/config/steady", Some(r#"{"value": "2", "colour": "red"}"#), 400, "bad_request", "colour"),
        bad("PUT /v1/config/steady", Some(r#"{"value": 2}"#), 400, "bad_request", "value"),
        bad("PUT /v1/config/steady", Some("{}"), 400, "bad_request", "value"),
        bad("POST /v1/config/steady/rollback", Some(r#"{"version": "one"}"#), 400, "bad_request", "version"),
        bad("POST /v1/acl/tokens", Some(r#"{"role": "emperor"}"#), 400, "bad_request", "role"),
        bad("DELETE /v1/config/steady", None, 405, "method_not_allowed", "DELETE"),
        bad("POST /v1/catalog", None, 405, "method_not_allowed", "POST"),
        bad("GET /v1/no/such/path", None, 404, "not_found", "/v1/no/such/path"),
        bad("GET /v1/audit?limit=0", None, 400, "bad_request", "limit"),
        bad("GET /v1/config/never-set", None, 404, "not_found", "never-set"),
    ];
    let mut failures = Vec::new();
    for case in cases {
        let (method, path) = case.request.split_once(' ').expect("METHOD PATH");
        let mut call = cluster.call("node-4", method, path).token(&admin.token);
        if let Some(body) = case.body {
            call = call.raw_json(body);
        }
        let reply = call.send().unwrap();
        match reply.expect_error(case.status, case.code) {
            Ok(message) if message.contains(case.names) => {}
            Ok(message) => failures.push(format!(
                "{case:?}: the message does not name {:?}: {message}",
                case.names
            )),
            Err(error) => failures.push(format!("{case:?}: {error:#}")),
        }
    }
    // A bad request id, a rollback to a version that never was.
    let reply = cluster
        .call("node-4", "PUT", "/v1/config/steady")
        .token(&admin.token)
        .request_id("not a valid id!")
        .json(&json!({"value": "2"}))
        .send()
        .unwrap();
    if let Err(error) = reply.expect_error(400, "bad_request") {
        failures.push(format!("bad request id: {error:#}"));
    }
    let reply = cluster
        .call("node-4", "POST", "/v1/config/steady/rollback")
        .token(&admin.token)
        .json(&json!({"version": 99}))
        .send()
        .unwrap();
    if let Err(error) = reply.expect_error(404, "not_found") {
        failures.push(format!("rollback to version 99: {error:#}"));
    }
    // A body over the 1 MiB limit.
    let huge = json!({"value": "x".repeat(2 << 20)}).to_string();
    let reply = cluster
        .call("node-4", "PUT", "/v1/config/steady")
        .token(&admin.token)
        .raw_json(&huge)
        .send()
        .unwrap();
    if let Err(error) = reply.expect_error(413, "too_large") {
        failures.push(format!("a 2 MiB body: {error:#}"));
    }

    assert_eq!(state_of(), before, "bad input changed the catalog");
    let health = cluster.health("node-4").unwrap();
    assert_eq!(health["status"], "ok");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_seed_group_is_visible_everywhere_and_leadership_can_move() {
    let (cluster, admin) = ready_cluster_with_admin("catalog-seeds", 1);
    let ids = all_ids(&cluster);
    let leader = cluster.wait_leader(&as_strs(&ids), None);

    let at_member = cluster.seeds_status("node-4").unwrap();
    assert_eq!(
        at_member["voters"],
        json!(["node-1", "node-2", "node-3"]),
        "{at_member}"
    );
    assert_eq!(at_member["leader"], leader.as_str(), "{at_member}");
    assert_eq!(at_member["voters_outgoing"], json!([]), "{at_member}");
    assert!(
        at_member["term"].is_null(),
        "a member runs no Raft: {at_member}"
    );
    for seed in ["node-1", "node-2", "node-3"] {
        let status = cluster.seeds_status(seed).unwrap();
        let role = if seed == leader { "leader" } else { "follower" };
        assert_eq!(status["role"], role, "at {seed}: {status}");
        assert!(status["term"].as_u64().unwrap() >= 1, "at {seed}: {status}");
        assert!(
            status["commit_index"].as_u64().unwrap() >= status["applied_index"].as_u64().unwrap(),
            "at {seed}: {status}"
        );
    }
    let old_term = cluster.seeds_status(&leader).unwrap()["term"]
        .as_u64()
        .unwrap();

    // Only an admin may move leadership, and only to a voter.
    let target = if leader == "node-1" {
        "node-2"
    } else {
        "node-1"
    };
    cluster
        .call("node-4", "POST", "/v1/seeds/transfer-leader")
        .json(&json!({"node_id": target}))
        .send()
        .unwrap()
        .expect_error(401, "unauthorized")
        .unwrap();
    let operator = cluster
        .create_token("node-4", &admin.token, "operator")
        .unwrap();
    cluster
        .call("node-4", "POST", "/v1/seeds/transfer-leader")
        .token(&operator.token)
        .json(&json!({"node_id": target}))
        .send()
        .unwrap()
        .expect_error(403, "forbidden")
        .unwrap();

    // Through the CLI at the member.
    cluster
        .cli_ok(
            "node-4",
            Some(&admin.token),
            ["seeds", "transfer-leader", target],
        )
        .unwrap();
    wait_until(
        TIMEOUT,
        &format!("every agent to name {target} the leader"),
        || {
            for node_id in &ids {
                let status = cluster.seeds_status(node_id)?;
                ensure!(status["leader"] == target, "at {node_id}: {status}");
            }
            Ok(())
        },
    );
    let status = cluster.seeds_status(target).unwrap();
    assert_eq!(status["role"], "leader", "{status}");
    assert!(status["term"].as_u64().unwrap() > old_term, "{status}");
    let listed = cluster.cli_ok("node-4", None, ["seeds", "--json"]).unwrap();
    let listed: Value = serde_json::from_str(&listed).expect("seeds --json");
    assert_eq!(listed["leader"], target, "{listed}");
    // Writes go on under the new leader.
    cluster
        .set_config("node-4", Some(&admin.token), "moved", target)
        .unwrap()
        .ok()
        .unwrap();
}
