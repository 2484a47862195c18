//! `/metrics` as a cluster: an `HTTP` listener whose rules route to a `Prometheus`
//! cluster serves the metrics exposition (and the API) for those requests.

use super::controller::ServiceCluster;
use crate::core::build::Protocol;

pub const PROMETHEUS: &str = "Prometheus";

/// `/metrics`, for HTTP listeners.
pub const PROTOCOL: Protocol = Protocol {
    name: PROMETHEUS,
    aliases: &[],
    listener: None,
    cluster: Some(|_, _| Ok(std::sync::Arc::new(ServiceCluster { name: PROMETHEUS }))),
    listener_schema: None,
    cluster_schema: Some(crate::core::build::schema::<crate::core::build::NoSettings>),
    carries: Protocol::CARRIES_NOTHING,
};
