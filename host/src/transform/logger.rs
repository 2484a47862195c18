//! `Logger`: passes chunks through unchanged and writes each one, prefixed with
//! `log_prefix` and the session name, to `log_file` (`stdout`, `stderr` or a path;
//! the proxy's log when unset).

use crate::core::build::Protocol;
use bytes::Bytes;
use serde::Deserialize;

use crate::core::{StageContext, StageError, Transform};

pub const NAME: &str = "Logger";

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct LoggerSpec {
    #[serde(default)]
    log_file: Option<String>,
    #[serde(default)]
    log_prefix: Option<String>,
}

enum Sink {
    Tracing,
    /// stdout, stderr or a file, written by a thread of its own (never blocking the
    /// session).
    Writer(crate::logging::Sink),
}

pub struct Logger {
    prefix: String,
    sink: Sink,
}

impl LoggerSpec {
    fn open(&self) -> std::io::Result<Logger> {
        let sink = match self.log_file.as_deref() {
            None | Some("") => Sink::Tracing,
            // The original's name for stdout.
            Some("-") => Sink::Writer(
                crate::logging::sink("stdout")
                    .map_err(|e| crate::protocol::net::at("stdout", e))?,
            ),
            Some(target) => Sink::Writer(
                crate::logging::sink(target).map_err(|e| crate::protocol::net::at(target, e))?,
            ),
        };
        Ok(Logger {
            prefix: self.log_prefix.clone().unwrap_or_default(),
            sink,
        })
    }
}

#[async_trait::async_trait]
impl Transform for Logger {
    async fn process(
        &mut self,
        chunk: Bytes,
        cx: &dyn StageContext,
        out: &mut Vec<Bytes>,
    ) -> Result<(), StageError> {
        let text = String::from_utf8_lossy(&chunk);
        let line = format!(
            "{}{}{}: {:?}\n",
            self.prefix,
            if self.prefix.is_empty() { "" } else { ": " },
            cx.session(),
            text
        );
        match &mut self.sink {
            Sink::Tracing => tracing::info!(target: "l7mp::logger", "{}", line.trim_end()),
            Sink::Writer(w) => crate::logging::write_line(w, line.as_bytes()),
        }
        out.push(chunk);
        Ok(())
    }
}

#[async_trait::async_trait]
impl crate::core::ClusterProtocol for LoggerSpec {
    fn name(&self) -> &'static str {
        NAME
    }
    fn is_virtual(&self) -> bool {
        true
    }
    /// Finding (and, after a rotation, reopening) the file touches the disk: on the
    /// blocking pool, never on the session's worker.
    async fn connect(&self, _target: crate::core::Target<'_>) -> std::io::Result<crate::core::Stage> {
        let spec = self.clone();
        let logger = tokio::task::spawn_blocking(move || spec.open())
            .await
            .map_err(std::io::Error::other)??;
        Ok(crate::core::Stage::Transform(Box::new(logger)))
    }
}

/// Logger.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: None,
    cluster: Some(|spec, cx| {
        let logger: LoggerSpec = cx.parse(spec, "spec")?;
        if logger
            .log_file
            .as_deref()
            .is_some_and(|f| !matches!(f, "" | "-" | "stdout" | "stderr"))
        {
            cx.reach_host("a Logger with a log_file writes a file")?;
        }
        Ok(std::sync::Arc::new(logger))
    }),
    listener_schema: None,
    cluster_schema: Some(crate::core::build::schema::<LoggerSpec>),
    carries: Protocol::CARRIES_NOTHING,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stage::Detached;

    #[tokio::test]
    async fn logs_to_a_file_and_passes_through() {
        let path = std::env::temp_dir().join(format!("l7mp-logger-{}.log", std::process::id()));
        let spec = LoggerSpec {
            log_file: Some(path.display().to_string()),
            log_prefix: Some("in".into()),
        };
        let mut logger = spec.open().unwrap();
        let md = serde_json::json!({});
        let mut out = Vec::new();
        logger
            .process(
                Bytes::from_static(b"hello"),
                &Detached::new("s1", md.clone()),
                &mut out,
            )
            .await
            .unwrap();
        assert_eq!(out, vec![Bytes::from_static(b"hello")]);
        // Written by the sink's own thread, soon.
        let start = std::time::Instant::now();
        while std::fs::read_to_string(&path)
            .unwrap_or_default()
            .is_empty()
        {
            assert!(start.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "in: s1: \"hello\"\n"
        );
        let _ = std::fs::remove_file(path);
    }
}
