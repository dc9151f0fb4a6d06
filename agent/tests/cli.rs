//! Quick tests of the `shoal` binary's command line: help, the `tls` verbs,
//! config errors, and a client verb with no agent to talk to.
//!
//! Being an integration test of the agent package, this file also makes
//! `cargo test --workspace` build the `shoal` binary before the black-box
//! tests in `shoal-tests` run it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a command may run here: each one should fail or finish at once.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `shoal ARGS...` with `SHOAL_HTTP_ADDR` unset unless given, and
/// kills it if it runs past [`COMMAND_TIMEOUT`] (a config that was meant to
/// be refused but starts an agent must not hang the test).
fn shoal(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .args(args)
        .env_remove("SHOAL_HTTP_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start shoal");
    let start = Instant::now();
    while child.try_wait().expect("poll shoal").is_none() {
        if start.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect shoal's output");
            panic!(
                "`shoal {}` still running after {COMMAND_TIMEOUT:?}; stderr: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect shoal's output")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_fails(output: &Output, needle: &str) {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit code 1; stdout: {}; stderr: {}",
        stdout(output),
        stderr(output)
    );
    let stderr = stderr(output);
    assert!(
        stderr.starts_with("error: "),
        "stderr does not start with `error: `: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{needle:?} not in stderr: {stderr}"
    );
}

fn path(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn help_lists_the_verbs() {
    let output = shoal(&["--help"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let help = stdout(&output);
    for verb in ["agent", "members", "tls", "demo"] {
        assert!(help.contains(verb), "{verb} not in --help: {help}");
    }
    let output = shoal(&["agent", "--help"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("--config"), "{}", stdout(&output));
}

#[test]
fn tls_ca_then_cert_writes_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = dir.path().join("certs");
    let output = shoal(&["tls", "ca", "create", "--out", path(&ca)], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("ca.pem"), "{}", stdout(&output));
    #[rustfmt::skip]
    let output = shoal(
        &[
            "tls", "cert", "create", "--ca", path(&ca), "--node-id", "db-07",
            "--ip", "127.0.0.1", "--ip", "::1", "--dns", "db-07.example", "--out", path(&out),
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let cert = std::fs::read_to_string(out.join("db-07.pem")).unwrap();
    let key = std::fs::read_to_string(out.join("db-07-key.pem")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert!(key.contains("PRIVATE KEY-----"), "not a private key");
    assert_eq!(mode(&out.join("db-07-key.pem")), 0o600, "node key mode");
    assert_eq!(mode(&ca.join("ca-key.pem")), 0o600, "CA key mode");
}

#[test]
fn tls_ca_create_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let output = shoal(&["tls", "ca", "create", "--out", path(&ca)], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let first = std::fs::read(ca.join("ca.pem")).unwrap();
    let first_key = std::fs::read(ca.join("ca-key.pem")).unwrap();
    let output = shoal(&["tls", "ca", "create", "--out", path(&ca)], &[]);
    assert_fails(&output, "refusing to overwrite");
    assert_eq!(std::fs::read(ca.join("ca.pem")).unwrap(), first);
    assert_eq!(std::fs::read(ca.join("ca-key.pem")).unwrap(), first_key);
}

#[test]
fn tls_cert_create_refuses_a_bad_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let output = shoal(&["tls", "ca", "create", "--out", path(&ca)], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = dir.path().join("certs");
    #[rustfmt::skip]
    let output = shoal(
        &["tls", "cert", "create", "--ca", path(&ca), "--node-id", "bad id", "--out", path(&out)],
        &[],
    );
    assert_fails(&output, "--node-id");
    assert!(!out.join("bad id.pem").exists());
}

const GOOD_CONFIG: &str = r#"
node_id = "db-07"
role = "member"
data_dir = "data"
[labels]
region = "us-east"
zone = "us-east-1a"
[cluster]
name = "prod-a"
listen = "127.0.0.1:7400"
seeds = ["127.0.0.1:7401"]
[tls]
ca = "ca.pem"
cert = "db-07.pem"
key = "db-07-key.pem"
"#;

#[test]
fn a_bad_config_fails_with_exit_code_1_naming_the_key() {
    let cases = [
        (GOOD_CONFIG.replace("node_id = \"db-07\"\n", ""), "node_id"),
        (GOOD_CONFIG.replace("\"db-07\"", "\"bad id\""), "node_id"),
        (GOOD_CONFIG.replace("\"member\"", "\"king\""), "role"),
        (
            GOOD_CONFIG.replace("127.0.0.1:7400", "0.0.0.0:7400"),
            "cluster.advertise",
        ),
        (
            GOOD_CONFIG.replace("[\"127.0.0.1:7401\"]", "[]"),
            "cluster.seeds",
        ),
        (
            GOOD_CONFIG.replace("[tls]", "colour = \"red\"\n[tls]"),
            "colour",
        ),
        (
            GOOD_CONFIG.replace("[tls]", "bootstrap_expect = 2\n[tls]"),
            "cluster.bootstrap_expect",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (index, (text, key)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("bad-{index}.toml"));
        std::fs::write(&config, text).unwrap();
        let output = shoal(&["agent", "-c", path(&config)], &[]);
        assert_fails(&output, key);
        assert!(
            stderr(&output).contains(path(&config)),
            "the file is not named: {}",
            stderr(&output)
        );
    }
    // Refused before touching anything: no data dir was created.
    assert!(!dir.path().join("data").exists());

    let missing = dir.path().join("missing.toml");
    assert_fails(
        &shoal(&["agent", "-c", path(&missing)], &[]),
        path(&missing),
    );
}

#[test]
fn members_without_an_agent_fails_clearly() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let output = shoal(&["members", "--http", &addr], &[]);
    assert_fails(&output, &format!("cannot reach the agent at {addr}"));
    // The address may come from the environment too, and is named the same.
    let output = shoal(&["members", "--json"], &[("SHOAL_HTTP_ADDR", &addr)]);
    assert_fails(&output, &format!("cannot reach the agent at {addr}"));
}
