//! Membership of real agents on loopback: boot from seeds, crash and
//! restart, graceful leave, pause, and peers that misbehave (a certificate
//! from another CA, garbage datagrams, a member speaking for another).
//!
//! Every test runs its own cluster; see `shoal_tests` for the harness. The
//! agents run with their default SWIM timings, so what is waited for here is
//! what an operator would see.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use anyhow::{Result, ensure};
use shoal_membership::{
    Generation, Identity, MemberMeta, Membership, MembershipConfig, NodeId, Role,
};
use shoal_tests::{Cluster, Member, NodeSpec, Prober, TIMEOUT, drops, row, shoal_ok, wait_until};

/// The SWIM packet size limit the agents run with (the membership default).
const PACKET_BYTES_MAX: usize = 1150;

/// A small deterministic byte generator for garbage (xorshift64*).
struct Garbage(u64);

impl Garbage {
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }
}

/// A Shoal datagram envelope (`SHL`, version, cluster name) around `payload`.
fn envelope(version: u8, cluster: &str, payload: &[u8]) -> Vec<u8> {
    let mut packet = b"SHL".to_vec();
    packet.push(version);
    packet.push(cluster.len() as u8);
    packet.extend_from_slice(cluster.as_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// The drop reasons [`bad_datagram`] provokes.
const BAD_DATAGRAMS: [&str; 5] = [
    "malformed",
    "version",
    "foreign_cluster",
    "decode",
    "too_big",
];

/// A datagram that an agent of cluster `cluster` drops for `reason`.
fn bad_datagram(reason: &str, cluster: &str, garbage: &mut Garbage) -> Vec<u8> {
    match reason {
        "malformed" => garbage.bytes(40),
        "version" => envelope(2, cluster, &garbage.bytes(40)),
        "foreign_cluster" => envelope(1, "another-cluster", &garbage.bytes(40)),
        "decode" => envelope(1, cluster, &garbage.bytes(100)),
        // Bigger than any SWIM packet, though QUIC can carry it.
        "too_big" => envelope(1, cluster, &garbage.bytes(PACKET_BYTES_MAX)),
        other => panic!("no bad datagram for {other}"),
    }
}

#[test]
fn five_agents_boot_from_seeds_and_see_each_other_alive() {
    let cluster = Cluster::builder("boot")
        .seeds(3)
        .members(2)
        .start()
        .expect("start the cluster");

    for observer in cluster.nodes() {
        let rows = cluster.members(&observer.node_id).unwrap();
        assert_eq!(rows.len(), 5, "at {}: {rows:#?}", observer.node_id);
        for node in cluster.nodes() {
            let member = row(&rows, &node.node_id).unwrap();
            let at = format!("{} as seen by {}", node.node_id, observer.node_id);
            assert_eq!(member.state, "alive", "{at}");
            assert_eq!(member.generation, 1, "{at}");
            assert_eq!(member.role, node.role(), "{at}");
            assert_eq!(member.labels, node.labels, "{at}");
            assert_eq!(member.addr, node.quic.to_string(), "{at}");
            assert!(!member.version.is_empty(), "{at}: empty version");
            assert_eq!(member.local, node.node_id == observer.node_id, "{at}");
        }
        let health = cluster.health(&observer.node_id).unwrap();
        assert_eq!(health["status"], "ok");
        assert_eq!(health["node_id"], observer.node_id.as_str());
        assert_eq!(health["generation"], 1);
        assert_eq!(health["role"], observer.role());
    }

    // The CLI shows the same table, as JSON and for humans.
    let http = cluster.nodes()[3].http.to_string();
    let output = shoal_ok(["members", "--json", "--http", &http]).unwrap();
    let listed: Vec<Member> = serde_json::from_slice(&output.stdout).expect("members --json");
    let ids: Vec<&str> = listed
        .iter()
        .map(|member| member.node_id.as_str())
        .collect();
    assert_eq!(ids, ["node-1", "node-2", "node-3", "node-4", "node-5"]);
    let output = shoal_ok(["members", "--http", &http]).unwrap();
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.starts_with("NODE"), "{table}");
    assert!(
        table.contains("node-4 *"),
        "the local row is not marked: {table}"
    );
    assert_eq!(table.matches(" alive ").count(), 5, "{table}");

    // Unknown paths are JSON errors.
    let (status, body) = cluster.get("node-1", "/v1/no-such-thing").unwrap();
    assert_eq!(status, 404, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(error["error"]["code"], "not_found", "{body}");
    assert!(error["error"]["message"].is_string(), "{body}");
}

#[test]
fn a_killed_member_is_down_everywhere_and_comes_back_as_generation_2() {
    let cluster = Cluster::builder("kill-restart")
        .seeds(3)
        .members(1)
        .start()
        .expect("start the cluster");

    cluster.kill("node-4");
    cluster.wait_seen_as("node-4", "down", Some(1));

    cluster.start("node-4");
    // Alive everywhere, with generation 2, and listed once: the new
    // generation replaced the old at once, with no name conflict.
    cluster.wait_converged();
    for observer in cluster.nodes() {
        let rows = cluster.members(&observer.node_id).unwrap();
        assert_eq!(rows.len(), 4, "at {}: {rows:#?}", observer.node_id);
        let member = row(&rows, "node-4").unwrap();
        assert_eq!((member.state.as_str(), member.generation), ("alive", 2));
    }
    assert_eq!(cluster.health("node-4").unwrap()["generation"], 2);
}

#[test]
fn an_agent_with_a_certificate_from_another_ca_never_joins() {
    let cluster = Cluster::builder("foreign-ca")
        .seeds(3)
        .node(NodeSpec::member("rogue").foreign_ca().manual())
        .start()
        .expect("start the cluster");
    let seeds = ["node-1", "node-2", "node-3"];
    let refused = |cluster: &Cluster| -> Result<f64> {
        let mut total = 0.0;
        for seed in seeds {
            total += cluster.metric(seed, "shoal_transport_handshakes_failed_total")?;
        }
        Ok(total)
    };
    let refused_before = refused(&cluster).unwrap();

    cluster.start("rogue");
    // The rogue keeps dialling its seeds; the seeds refuse every handshake.
    wait_until(TIMEOUT, "the seeds to refuse 3 handshakes", || {
        let now = refused(&cluster)?;
        ensure!(
            now >= refused_before + 3.0,
            "{now} refused, {refused_before} before"
        );
        Ok(())
    });

    let rogue_rows = cluster.members("rogue").unwrap();
    assert_eq!(
        rogue_rows.len(),
        1,
        "the rogue knows others: {rogue_rows:#?}"
    );
    for node in cluster.running() {
        let rows = cluster.members(&node.node_id).unwrap();
        assert!(
            rows.iter().all(|member| member.node_id != "rogue"),
            "{} lists the rogue: {rows:#?}",
            node.node_id
        );
    }
    cluster.wait_converged();

    // The rogue's own metrics show that it kept failing.
    wait_until(TIMEOUT, "the rogue to count 3 failed handshakes", || {
        let failed = cluster.metric("rogue", "shoal_transport_handshakes_failed_total")?;
        ensure!(failed >= 3.0, "rogue counts {failed} failed handshakes");
        Ok(())
    });
    for node in cluster.running() {
        let rows = cluster.members(&node.node_id).unwrap();
        assert!(rows.iter().all(|member| member.node_id != "rogue"));
    }
}

#[test]
fn garbage_datagrams_are_counted_and_dropped_and_the_cluster_keeps_working() {
    let cluster = Cluster::builder("garbage")
        .seeds(3)
        .members(1)
        .start()
        .expect("start the cluster");
    let target = cluster.node("node-2");
    let mut garbage = Garbage(0x5eed_cafe_f00d_1234);

    // Raw UDP at the QUIC port: not QUIC at all, or far too big.
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    for round in 0..200 {
        let len = 1 + (round * 37) % 1500;
        let mut packet = garbage.bytes(len);
        if round % 4 == 0 {
            // Looks like a QUIC long-header (Initial) packet at first glance.
            packet[0] = 0xc0 | (packet[0] & 0x0f);
        }
        socket.send_to(&packet, target.quic).unwrap();
    }
    for _ in 0..5 {
        socket.send_to(&garbage.bytes(60_000), target.quic).unwrap();
    }

    // Authenticated QUIC datagrams with every kind of bad content.
    let prober = Prober::new(&cluster, "prober").unwrap();
    let connection = prober.connect(target.quic).unwrap();
    assert_eq!(connection.peer, "node-2");
    wait_until(
        TIMEOUT,
        "path MTU discovery to allow oversized datagrams",
        || {
            let max = connection.max_datagram_bytes();
            ensure!(max > PACKET_BYTES_MAX, "datagrams up to {max} bytes");
            Ok(())
        },
    );
    let before = cluster.metrics("node-2").unwrap();
    wait_until(
        TIMEOUT,
        "node-2 to count every kind of bad datagram",
        || {
            // Datagrams may be lost: send each kind again until it is counted.
            for reason in BAD_DATAGRAMS {
                connection.send(&bad_datagram(reason, &cluster.name, &mut garbage))?;
            }
            connection.send(&[])?;
            let now = cluster.metrics("node-2")?;
            for reason in BAD_DATAGRAMS {
                let series = drops(reason);
                let (was, is) = (before.get(&series)?, now.get(&series)?);
                ensure!(is > was, "{series} still {is}");
            }
            Ok(())
        },
    );
    // A burst, as a flooding peer would send.
    for _ in 0..2_000 {
        let _ = connection.send(&garbage.bytes(200));
    }

    // Nothing changed: same generation, everyone alive.
    assert_eq!(cluster.health("node-2").unwrap()["generation"], 1);
    cluster.wait_converged();
    for node in cluster.running() {
        let rows = cluster.members(&node.node_id).unwrap();
        assert!(rows.iter().all(|member| member.node_id != "prober"));
    }

    // And the cluster still detects a failure.
    cluster.kill("node-4");
    cluster.wait_seen_as("node-4", "down", Some(1));
}

#[test]
fn a_member_cannot_speak_for_another() {
    let cluster = Cluster::builder("impersonation")
        .seeds(3)
        .start()
        .expect("start the cluster");
    let target = cluster.node("node-2");
    let prober = Prober::new(&cluster, "prober").unwrap();
    let connection = prober.connect(target.quic).unwrap();

    // A genuine SWIM announce, but from "node-1" (generation 99, at the
    // prober's address) sent over a connection authenticated as "prober".
    let identity = Identity {
        node_id: NodeId::new("node-1").unwrap(),
        addr: prober.local_addr().unwrap(),
        generation: Generation(99),
        rejoin: 0,
        meta: std::sync::Arc::new(MemberMeta {
            role: Role::Seed,
            labels: Default::default(),
            version: "0.0.0".into(),
        }),
    };
    let mut impostor = Membership::new(
        identity,
        MembershipConfig::new(cluster.name.as_str()),
        7,
        Duration::ZERO,
    )
    .unwrap();
    impostor.add_seed(Duration::ZERO, NodeId::new("node-2").unwrap(), target.quic);
    let announce = impostor.poll_transmit().expect("an announce to node-2");
    assert_eq!(announce.addr, target.quic);

    let series = drops("impersonation");
    let before = cluster.metric("node-2", &series).unwrap();
    wait_until(TIMEOUT, "node-2 to drop the impersonating announce", || {
        connection.send(&announce.payload)?;
        let now = cluster.metric("node-2", &series)?;
        ensure!(now > before, "{series} still {now}");
        Ok(())
    });
    let decode = cluster.metric("node-2", &drops("decode")).unwrap();
    assert_eq!(decode, 0.0, "the announce itself should decode");

    // Nothing changed: node-1 is still generation 1 at its own address.
    for node in cluster.running() {
        let rows = cluster.members(&node.node_id).unwrap();
        let member = row(&rows, "node-1").unwrap();
        let at = format!("at {}", node.node_id);
        assert_eq!(member.generation, 1, "{at}");
        assert_eq!(member.addr, cluster.node("node-1").quic.to_string(), "{at}");
        assert_eq!(member.state, "alive", "{at}");
        assert!(rows.iter().all(|member| member.node_id != "prober"), "{at}");
    }
    cluster.wait_converged();
}

#[test]
fn sigterm_leaves_gracefully_with_exit_status_0() {
    let cluster = Cluster::builder("sigterm")
        .seeds(3)
        .members(1)
        .start()
        .expect("start the cluster");

    let status = cluster.terminate("node-4");
    assert_eq!(status.code(), Some(0), "node-4 exited with {status}");
    cluster.wait_seen_as("node-4", "down", Some(1));
}

#[test]
fn a_seed_killed_and_restarted_at_once_is_alive_everywhere_with_a_newer_generation() {
    let cluster = Cluster::builder("seed-restart")
        .seeds(3)
        .members(1)
        .start()
        .expect("start the cluster");

    cluster.kill("node-1");
    // Restarted before anyone noticed: the newer generation must replace
    // the old one without a detour through "down".
    cluster.start("node-1");
    cluster.wait_converged();
    for observer in cluster.nodes() {
        let rows = cluster.members(&observer.node_id).unwrap();
        assert_eq!(rows.len(), 4, "at {}: {rows:#?}", observer.node_id);
        assert_eq!(row(&rows, "node-1").unwrap().generation, 2);
    }
}

#[test]
fn a_paused_member_is_declared_down_and_rejoins_when_resumed() {
    let cluster = Cluster::builder("pause")
        .seeds(3)
        .members(1)
        .start()
        .expect("start the cluster");

    cluster.pause("node-4");
    cluster.wait_seen_as("node-4", "down", Some(1));
    cluster.resume("node-4");
    // Same process, same generation: it rejoins on its own.
    cluster.wait_converged();
}
