//! `STDIO-fork`: a child process per session, like socat's EXEC. The session writes
//! to the child's stdin and reads its stdout; its stderr goes to the proxy's log. When
//! the child's stdout ends, the child is reaped: exit status 0 ends the session
//! normally, anything else ends it with the status as the error.

use crate::core::build::Protocol;
use std::io;
use std::process::Stdio;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{ChunkRx, ClusterProtocol, Conn, Framing, Stage, Target};
use crate::core::stream::{StreamRx, StreamTx};

pub const NAME: &str = "STDIO-fork";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = ForkSpec)]
pub struct ForkCluster {
    /// The program and its arguments; no shell is involved.
    command: Vec<String>,
}

impl ForkCluster {
    pub fn validate(&self) -> Result<(), String> {
        match self.command.first() {
            Some(program) if !program.is_empty() => Ok(()),
            _ => Err("spec.command must name a program: [\"/bin/cat\", ...]".into()),
        }
    }
}

/// Reads the child's stdout and, at its end, reports how the child exited.
struct ChildRx {
    inner: StreamRx<tokio::process::ChildStdout>,
    child: Child,
    program: String,
}

#[async_trait]
impl ChunkRx for ChildRx {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        match self.inner.recv().await? {
            Some(chunk) => Ok(Some(chunk)),
            None => {
                let status = self.child.wait().await?;
                if status.success() {
                    Ok(None)
                } else {
                    Err(io::Error::other(format!(
                        "{} exited with {status}",
                        self.program
                    )))
                }
            }
        }
    }
}

#[async_trait]
impl ClusterProtocol for ForkCluster {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn connect(&self, target: Target<'_>) -> io::Result<Stage> {
        let program = self.command[0].clone();
        let mut child = Command::new(&program)
            .args(&self.command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {program}: {e}")))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        if let Some(stderr) = child.stderr.take() {
            let who = format!("{} (cluster {})", program, target.cluster);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!("{who}: {line}");
                }
            });
        }
        let pid = child.id().unwrap_or_default();
        Ok(Stage::Conn(Conn::chunks(
            Framing::Stream,
            Box::new(ChildRx {
                inner: StreamRx::new(stdout),
                child,
                program: program.clone(),
            }),
            Box::new(StreamTx::new(stdin)),
            format!("{program} (pid {pid})"),
        )))
    }
}

/// A child process per session, on its stdin and stdout.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: None,
    cluster: Some(|spec, cx| {
        cx.reach_host("STDIO-fork runs commands")?;
        let fork: ForkCluster = cx.parse(spec, "spec")?;
        fork.validate().map_err(crate::core::ConfigError::invalid)?;
        Ok(std::sync::Arc::new(fork))
    }),
    listener_schema: None,
    cluster_schema: Some(crate::core::build::schema::<ForkCluster>),
    carries: Protocol::CARRIES_NOTHING,
};
