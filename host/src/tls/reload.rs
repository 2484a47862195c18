//! Certificates rotate under a running listener: a config built from files is rebuilt
//! when one of them changes (checked at most once a second, by the first handshake
//! that comes along). Established sessions keep the config they shook hands with; a
//! rebuild that fails (a half-written file) keeps the old config and is retried.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use super::TlsError;

const CHECK_EVERY: Duration = Duration::from_secs(1);

type Build<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

pub struct Reloading<T> {
    files: Vec<PathBuf>,
    build: Build<T>,
    current: ArcSwap<T>,
    /// When the files were last looked at, and what they looked like then.
    seen: Mutex<(Instant, Vec<Option<SystemTime>>)>,
}

fn stamps(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

impl<T> Reloading<T> {
    /// Builds now (so that a bad file is an error where the object is created) and
    /// again whenever one of `files` changes.
    pub fn new(
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, TlsError> {
        let seen = stamps(&files);
        let first = build()?;
        Ok(Reloading {
            files,
            build: Box::new(build),
            current: ArcSwap::from_pointee(first),
            seen: Mutex::new((Instant::now(), seen)),
        })
    }

    /// The config to shake hands with now.
    pub fn current(&self) -> Arc<T> {
        self.refresh();
        self.current.load_full()
    }

    fn refresh(&self) {
        if self.files.is_empty() {
            return;
        }
        // Whoever holds the lock checks; the others go on with what is current.
        let Ok(mut seen) = self.seen.try_lock() else {
            return;
        };
        if seen.0.elapsed() < CHECK_EVERY {
            return;
        }
        seen.0 = Instant::now();
        let now = stamps(&self.files);
        if now == seen.1 {
            return;
        }
        match (self.build)() {
            Ok(config) => {
                self.current.store(Arc::new(config));
                seen.1 = now;
                tracing::info!(files = ?self.files, "TLS files changed: reloaded");
            }
            Err(e) => {
                tracing::warn!("TLS files changed but cannot be loaded (keeping the old ones): {e}")
            }
        }
    }
}
