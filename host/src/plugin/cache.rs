//! The on-disk cache of precompiled components, so a restart (or re-uploading a known
//! component) skips Cranelift. A file is named by the component's SHA-256, the
//! wasmtime version and a hash of the engine's settings, so a proxy never loads code
//! compiled for a different engine. Loading precompiled code means trusting the files:
//! the directory must belong to the proxy's user and be closed to everyone else, or the
//! cache is not used.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

const WASMTIME_VERSION: &str = "48.0.8";

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Opens (creating it, mode 0700) the cache directory, refusing one that others
    /// could write to.
    pub fn open(dir: &Path) -> Result<Cache, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(format!(
                "{} belongs to uid {}, not to the proxy",
                dir.display(),
                meta.uid()
            ));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "{} is open to other users (mode {:o}); make it 0700",
                dir.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        Ok(Cache {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, engine: &Engine, sha256: &str) -> PathBuf {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir.join(format!(
            "{sha256}-wasmtime{WASMTIME_VERSION}-{:016x}.cwasm",
            h.finish()
        ))
    }

    /// The precompiled component, if the cache holds one for this engine.
    pub fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(engine, sha256);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `store` into a directory only this user can
        // write (checked in `open`), and its name pins the engine it was compiled for;
        // wasmtime checks the header again.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!("plugin cache: {}: {e:#}; compiling again", path.display());
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Saves a compiled component; a failure only costs a compile next time.
    pub fn store(&self, engine: &Engine, sha256: &str, component: &Component) {
        let path = self.path(engine, sha256);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = component
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|bytes| std::fs::write(&tmp, bytes).map_err(|e| e.to_string()))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| e.to_string()));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!("plugin cache: {}: {e}", path.display());
        }
    }
}
