//! Prometheus metrics. Labels are object names (listener, cluster) and a direction,
//! never a session, so the series count is bounded by the configuration; a deleted
//! object's series are removed with it. One [`Metrics`] per process, made where the
//! proxy is put together and handed to whoever counts.

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub listener_sessions: IntCounterVec,
    pub listener_active: IntGaugeVec,
    pub listener_bytes: IntCounterVec,
    pub listener_packets: IntCounterVec,
    pub cluster_sessions: IntCounterVec,
    pub cluster_connect_failures: IntCounterVec,
    pub cluster_active: IntGaugeVec,
    pub cluster_bytes: IntCounterVec,
    pub cluster_packets: IntCounterVec,
    pub transform_errors: IntCounterVec,
    pub metric_bytes: IntCounterVec,
    pub metric_packets: IntCounterVec,
    pub active_sessions: IntGauge,
    pub offload_active: IntGauge,
    pub sessions_rejected: IntCounterVec,
    pub plugin_calls: IntCounterVec,
    pub plugin_faults: IntCounterVec,
    pub plugin_instances: IntGaugeVec,
    pub plugin_guest_counters: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Metrics {
    #[allow(clippy::new_without_default)] // one per process, made on purpose
    pub fn new() -> Metrics {
        let r = Registry::new();
        let active_sessions =
            IntGauge::new("l7mp_active_sessions", "Sessions not yet ended").expect("valid metric");
        r.register(Box::new(active_sessions.clone()))
            .expect("unique metric");
        let offload_active = IntGauge::new(
            "l7mp_offload_active",
            "1 when the kernel UDP fast path is loaded and attached",
        )
        .expect("valid metric");
        r.register(Box::new(offload_active.clone()))
            .expect("unique metric");
        let dir = &["listener", "direction"][..];
        let cdir = &["cluster", "direction"][..];
        Metrics {
            listener_sessions: counter(
                &r,
                "l7mp_listener_sessions_total",
                "Sessions a listener accepted",
                &["listener"],
            ),
            listener_active: gauge(
                &r,
                "l7mp_listener_active_sessions",
                "Active sessions per listener",
                &["listener"],
            ),
            listener_bytes: counter(
                &r,
                "l7mp_listener_bytes_total",
                "Bytes through a listener (in: from clients, out: to clients)",
                dir,
            ),
            listener_packets: counter(
                &r,
                "l7mp_listener_packets_total",
                "Chunks through a listener",
                dir,
            ),
            cluster_sessions: counter(
                &r,
                "l7mp_cluster_sessions_total",
                "Session stages a cluster connected",
                &["cluster"],
            ),
            cluster_connect_failures: counter(
                &r,
                "l7mp_cluster_connect_failures_total",
                "Failed connect attempts per cluster",
                &["cluster"],
            ),
            cluster_active: gauge(
                &r,
                "l7mp_cluster_active_sessions",
                "Connected session stages per cluster",
                &["cluster"],
            ),
            cluster_bytes: counter(
                &r,
                "l7mp_cluster_bytes_total",
                "Bytes through a cluster (out: sent to it, in: received)",
                cdir,
            ),
            cluster_packets: counter(
                &r,
                "l7mp_cluster_packets_total",
                "Chunks through a cluster",
                cdir,
            ),
            transform_errors: counter(
                &r,
                "l7mp_transform_errors_total",
                "Chunks a transform rejected",
                &["cluster"],
            ),
            metric_bytes: counter(
                &r,
                "l7mp_metric_bytes_total",
                "Bytes counted by Metric clusters",
                &["cluster"],
            ),
            metric_packets: counter(
                &r,
                "l7mp_metric_packets_total",
                "Chunks counted by Metric clusters",
                &["cluster"],
            ),
            sessions_rejected: counter(
                &r,
                "l7mp_sessions_rejected_total",
                "Sessions that found no route or failed to connect",
                &["listener"],
            ),
            plugin_calls: counter(
                &r,
                "l7mp_plugin_calls_total",
                "Calls into a plugin version",
                &["plugin", "version"],
            ),
            plugin_faults: counter(
                &r,
                "l7mp_plugin_faults_total",
                "Plugin calls that trapped or overran their deadline or memory",
                &["plugin", "version", "kind"],
            ),
            plugin_instances: gauge(
                &r,
                "l7mp_plugin_instances",
                "Live instances of a plugin version",
                &["plugin", "version"],
            ),
            plugin_guest_counters: counter(
                &r,
                "l7mp_plugin_counter_total",
                "Counters plugins keep through the host interface",
                &["plugin", "name"],
            ),
            active_sessions,
            offload_active,
            registry: r,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Drops a deleted listener's series.
    pub fn forget_listener(&self, name: &str) {
        let _ = self.listener_sessions.remove_label_values(&[name]);
        let _ = self.listener_active.remove_label_values(&[name]);
        for d in ["in", "out"] {
            let _ = self.listener_bytes.remove_label_values(&[name, d]);
            let _ = self.listener_packets.remove_label_values(&[name, d]);
        }
    }

    /// Drops a deleted cluster's series.
    pub fn forget_cluster(&self, name: &str) {
        for v in [
            &self.cluster_sessions,
            &self.cluster_connect_failures,
            &self.transform_errors,
            &self.metric_bytes,
            &self.metric_packets,
        ] {
            let _ = v.remove_label_values(&[name]);
        }
        let _ = self.cluster_active.remove_label_values(&[name]);
        for d in ["in", "out"] {
            let _ = self.cluster_bytes.remove_label_values(&[name, d]);
            let _ = self.cluster_packets.remove_label_values(&[name, d]);
        }
    }
}
