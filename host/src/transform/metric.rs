//! `Metric`: passes chunks through and counts them per Metric cluster in
//! `l7mp_metric_bytes_total` / `l7mp_metric_packets_total`; every stage's bytes also
//! show in its session's listing.

use crate::core::build::{Protocol, no_settings};
use bytes::Bytes;
use prometheus::{IntCounter, IntCounterVec};

use super::transform_cluster;
use crate::core::{StageContext, StageError, Transform};

pub const NAME: &str = "Metric";

/// The cluster; each session stage gets a [`Metric`] counting for it.
#[derive(Debug)]
pub struct MetricCluster {
    bytes: IntCounterVec,
    packets: IntCounterVec,
}

pub struct Metric {
    bytes: IntCounter,
    packets: IntCounter,
}

#[async_trait::async_trait]
impl Transform for Metric {
    async fn process(
        &mut self,
        chunk: Bytes,
        _: &dyn StageContext,
        out: &mut Vec<Bytes>,
    ) -> Result<(), StageError> {
        self.bytes.inc_by(chunk.len() as u64);
        self.packets.inc();
        out.push(chunk);
        Ok(())
    }
}

transform_cluster!(MetricCluster, NAME, |spec, target| {
    Ok::<_, std::io::Error>(Metric {
        bytes: spec.bytes.with_label_values(&[target.cluster]),
        packets: spec.packets.with_label_values(&[target.cluster]),
    })
});

/// Metric.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: None,
    cluster: Some(|spec, cx| {
        no_settings(spec, cx)?;
        Ok(std::sync::Arc::new(MetricCluster {
            bytes: cx.metrics.metric_bytes.clone(),
            packets: cx.metrics.metric_packets.clone(),
        }))
    }),
    listener_schema: None,
    cluster_schema: Some(crate::core::build::schema::<crate::core::build::NoSettings>),
    carries: Protocol::CARRIES_NOTHING,
};
