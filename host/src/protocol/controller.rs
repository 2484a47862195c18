//! The REST API as a cluster, as l7mp configs declare it: an `HTTP` listener whose
//! rules route to an `L7mpController` cluster serves the API for those requests (the
//! engine answers them, see `session::http`). `Prometheus` (`/metrics`) is the same
//! kind of cluster.

use crate::core::build::Protocol;
use std::io;

use async_trait::async_trait;

use super::{ClusterProtocol, Stage, Target};

pub const CONTROLLER: &str = "L7mpController";

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
pub const PROTOCOL: Protocol = Protocol {
    name: CONTROLLER,
    aliases: &[],
    listener: None,
    cluster: Some(|_, _| Ok(std::sync::Arc::new(ServiceCluster { name: CONTROLLER }))),
    listener_schema: None,
    cluster_schema: Some(crate::core::build::schema::<crate::core::build::NoSettings>),
    carries: Protocol::CARRIES_NOTHING,
};

