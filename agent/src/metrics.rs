//! Prometheus metrics: the registry, and publishing the core's counters.
//!
//! The core keeps plain counters (it cannot touch a global registry); the
//! shell copies them into the `metrics` registry when `/metrics` is scraped,
//! so a scrape always reflects the core's state at that instant.

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use shoal_membership::MemberState;
use shoal_membership::codec::DropReason;

use crate::shell::AgentCore;
use crate::transport::TransportStats;

/// The process's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the global recorder. Call once per process.
    pub fn install() -> Result<Self> {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).context("install metrics recorder")?;
        Ok(Self { handle })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Copies the core's and transport's counters into the registry.
    pub fn publish(&self, core: &AgentCore, transport: &TransportStats) {
        let membership = core.membership();
        let stats = membership.stats();
        let members = core.members();
        for state in MemberState::ALL {
            let count = members.iter().filter(|row| row.state == state).count();
            metrics::gauge!("shoal_members", "state" => state.as_str()).set(count as f64);
        }
        metrics::gauge!("shoal_local_health").set(f64::from(membership.local_health()));
        metrics::gauge!("shoal_generation").set(membership.identity().generation.0 as f64);
        let counters = [
            ("shoal_swim_probes_total", stats.probes),
            ("shoal_swim_probes_failed_total", stats.probes_failed),
            ("shoal_swim_suspicions_total", stats.suspicions),
            (
                "shoal_swim_suspicions_expired_total",
                stats.suspicions_expired,
            ),
            (
                "shoal_swim_suspicions_refuted_late_total",
                stats.suspicions_refuted_late,
            ),
            (
                "shoal_swim_accusations_received_total",
                stats.accusations_received,
            ),
            (
                "shoal_swim_accusations_answered_total",
                stats.accusations_answered,
            ),
            ("shoal_swim_suspects_asked_total", stats.suspects_asked),
            ("shoal_swim_nacks_sent_total", stats.nacks_sent),
            ("shoal_swim_nacks_received_total", stats.nacks_received),
            ("shoal_swim_early_gossips_total", stats.early_gossips),
            ("shoal_swim_timers_late_total", stats.timers_late),
            ("shoal_swim_self_suspected_total", stats.self_suspected),
            (
                "shoal_transport_handshakes_failed_total",
                transport.handshakes_failed,
            ),
            (
                "shoal_transport_peer_mismatches_total",
                transport.peer_mismatches,
            ),
            (
                "shoal_transport_datagrams_unsent_total",
                transport.datagrams_unsent,
            ),
            (
                "shoal_transport_inbound_dropped_total",
                transport.inbound_dropped,
            ),
        ];
        for (name, value) in counters {
            metrics::counter!(name).absolute(value);
        }
        metrics::counter!("shoal_swim_packets_total", "direction" => "in")
            .absolute(stats.packets_in);
        metrics::counter!("shoal_swim_packets_total", "direction" => "out")
            .absolute(stats.packets_out);
        metrics::counter!("shoal_swim_bytes_total", "direction" => "in").absolute(stats.bytes_in);
        metrics::counter!("shoal_swim_bytes_total", "direction" => "out").absolute(stats.bytes_out);
        for reason in DropReason::ALL {
            let value = stats.drops.get(&reason).copied().unwrap_or(0);
            metrics::counter!("shoal_swim_drops_total", "reason" => reason.as_str())
                .absolute(value);
        }
        for (kind, value) in &core.stats().messages_in {
            metrics::counter!("shoal_peer_messages_total", "direction" => "in", "kind" => *kind)
                .absolute(*value);
        }
        for (kind, value) in &core.stats().messages_out {
            metrics::counter!("shoal_peer_messages_total", "direction" => "out", "kind" => *kind)
                .absolute(*value);
        }
        let catalog = core.catalog();
        metrics::gauge!("shoal_catalog_applied_index").set(catalog.applied_index().0 as f64);
        if let Some(staleness) = core.catalog_staleness() {
            metrics::gauge!("shoal_catalog_staleness_seconds").set(staleness.as_secs_f64());
        }
        if let Some(raft) = core.raft() {
            use raft::Storage as _;
            metrics::gauge!("shoal_raft_term").set(raft.term().0 as f64);
            metrics::gauge!("shoal_raft_commit_index").set(raft.commit_index().0 as f64);
            metrics::gauge!("shoal_raft_is_leader").set(
                if raft.role() == shoal_consensus::Role::Leader {
                    1.0
                } else {
                    0.0
                },
            );
            let storage = raft.storage();
            if let (Ok(first), Ok(last)) = (storage.first_index(), storage.last_index()) {
                metrics::gauge!("shoal_raft_log_entries")
                    .set((last + 1).saturating_sub(first) as f64);
            }
            metrics::counter!("shoal_raft_snapshots_total")
                .absolute(raft.counters().snapshots_taken);
        }
        let now = core.now();
        core.membership().with_telemetry(|store| {
            let counters = store.counters();
            let telemetry = [
                (
                    "shoal_telemetry_local_versions_total",
                    counters.local_versions,
                ),
                ("shoal_telemetry_deltas_sent_total", counters.deltas_sent),
                (
                    "shoal_telemetry_deltas_dropped_for_size_total",
                    counters.deltas_dropped_for_size,
                ),
                (
                    "shoal_telemetry_versions_sent_total",
                    counters.versions_sent,
                ),
                (
                    "shoal_telemetry_versions_received_total",
                    counters.versions_received,
                ),
                (
                    "shoal_telemetry_merge_conflicts_resolved_total",
                    counters.merge_conflicts_resolved,
                ),
                (
                    "shoal_telemetry_decode_errors_total",
                    counters.decode_errors,
                ),
                (
                    "shoal_telemetry_anti_entropy_messages_total",
                    counters.anti_entropy_messages,
                ),
                (
                    "shoal_telemetry_anti_entropy_in_sync_total",
                    counters.anti_entropy_in_sync,
                ),
                (
                    "shoal_telemetry_records_removed_total",
                    counters.records_removed,
                ),
            ];
            for (name, value) in telemetry {
                metrics::counter!(name).absolute(value);
            }
            metrics::gauge!("shoal_telemetry_records").set(store.map().len() as f64);
            for (node, age) in store.ages(now) {
                metrics::gauge!("shoal_telemetry_age_seconds", "node" => node.to_string())
                    .set(age.as_secs_f64());
            }
        });
        metrics::counter!("shoal_membership_stream_bytes_total")
            .absolute(core.stats().membership_stream_bytes);
        metrics::counter!("shoal_swim_push_pulls_total").absolute(stats.push_pulls);
        metrics::counter!("shoal_swim_push_pulls_in_sync_total").absolute(stats.push_pulls_in_sync);
        metrics::counter!("shoal_telemetry_relays_total").absolute(stats.telemetry_relays);
        metrics::gauge!("shoal_swim_broadcast_backlog").set(membership.broadcast_backlog() as f64);
        metrics::gauge!("shoal_alerts_active").set(core.alerts().len() as f64);
        for rule in shoal_membership::alerts::AlertRule::ALL {
            let firing = core
                .alerts()
                .iter()
                .filter(|alert| alert.rule == rule)
                .count();
            metrics::gauge!("shoal_alerts_firing", "rule" => rule.name()).set(firing as f64);
        }
    }
}
