//! The REST API and the metrics exposition as clusters, as l7mp configs declare them:
//! an `HTTP` listener whose rules route to an `L7mpController` or `Prometheus` cluster
//! serves the API (and `/metrics`) for those requests (see [`super::http`]).

use crate::core::build::Protocol;
use std::io;

use async_trait::async_trait;

use super::{ClusterProtocol, Stage, Target};

pub const CONTROLLER: &str = "L7mpController";
pub const PROMETHEUS: &str = "Prometheus";

/// `L7mpController` and `Prometheus` clusters: only HTTP listeners can route to them.
#[derive(Debug)]
pub struct ServiceCluster {
    pub name: &'static str,
}

#[async_trait]
impl ClusterProtocol for ServiceCluster {
    fn name(&self) -> &'static str {
        self.name
    }
    fn is_virtual(&self) -> bool {
        true
    }
    fn serves_api(&self) -> bool {
        true
    }
    async fn connect(&self, _target: Target<'_>) -> io::Result<Stage> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("the {} cluster is served by HTTP listeners only", self.name),
        ))
    }
}

/// The REST API, for HTTP listeners.
pub const CONTROLLER_PROTOCOL: Protocol = Protocol {
    name: CONTROLLER,
    aliases: &[],
    listener: None,
    cluster: Some(|_, _| Ok(std::sync::Arc::new(ServiceCluster { name: CONTROLLER }))),
    carries: Protocol::CARRIES_NOTHING,
};

/// `/metrics`, for HTTP listeners.
pub const PROMETHEUS_PROTOCOL: Protocol = Protocol {
    name: PROMETHEUS,
    aliases: &[],
    listener: None,
    cluster: Some(|_, _| Ok(std::sync::Arc::new(ServiceCluster { name: PROMETHEUS }))),
    carries: Protocol::CARRIES_NOTHING,
};
