//! UNIX domain stream sockets: the listener binds `filename`, a cluster endpoint's
//! address (or `path`) is the socket to connect to.

use std::io;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use tokio::net::{UnixListener, UnixStream};

use super::{
    ClusterProtocol, Conn, Incoming, ListenerContext, ListenerProtocol, ListenerTask, Stage,
    Target, net,
};
use crate::core::build::{Carries, Protocol, bare_cluster, typed_listener};
use crate::core::stream::StreamSocket;

pub const NAME: &str = "UnixDomainSocket";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UnixListenerSpec {
    #[serde(alias = "path")]
    #[schema(value_type = String)]
    filename: PathBuf,
}

/// Removes the socket file when the listener goes away.
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[async_trait]
impl ListenerProtocol for UnixListenerSpec {
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        let listener = net::bind_unix(&self.filename, |p| UnixListener::bind(p))?;
        let unlink = Unlink(self.filename.clone());
        let filename = self.filename.display().to_string();
        let task = tokio::spawn(async move {
            let _unlink = unlink;
            loop {
                match listener
                    .accept()
                    .await
                    .and_then(|(s, a)| net::within_budget(&s).map(|()| (s, a)))
                {
                    Ok((stream, _)) => {
                        let metadata = json!({ "UNIX": { "filename": filename } });
                        cx.accept(Incoming {
                            metadata,
                            conn: Conn::socket(StreamSocket::Unix(stream), filename.clone()),
                        });
                    }
                    Err(e) => {
                        net::accept_failed(&cx.name, e).await;
                    }
                }
            }
        });
        Ok(ListenerTask::new(self.filename.display().to_string(), task))
    }
}

#[derive(Debug, Default)]
pub struct UnixCluster;

#[async_trait]
impl ClusterProtocol for UnixCluster {
    fn name(&self) -> &'static str {
        NAME
    }
    fn needs_endpoint(&self) -> bool {
        true
    }
    async fn connect(&self, target: Target<'_>) -> io::Result<Stage> {
        let path = target.path()?;
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|e| net::at(&path, e))?;
        net::within_budget(&stream)?;
        Ok(Stage::Conn(Conn::socket(StreamSocket::Unix(stream), path)))
    }
}

/// UNIX stream sockets: a codec or JSONSocket may run over them.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: Some(typed_listener::<UnixListenerSpec>),
    cluster: Some(bare_cluster::<UnixCluster>),
    listener_schema: Some(crate::core::build::schema::<UnixListenerSpec>),
    cluster_schema: Some(crate::core::build::schema::<crate::core::build::NoSettings>),
    carries: Carries {
        codec: true,
        jsonsocket_listener: true,
        jsonsocket_cluster: true,
    },
};
