//! `l7mp`: a multiprotocol Layer-7 proxy configured live over a REST API.
//!
//! Start-up reads the command line, installs logging, loads the config (the embedded
//! default or `-c FILE`), starts the admin API, then serves until SIGINT or SIGTERM.

use l7mp::{api, logging, model, plugin, protocol, proxy};

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;

/// Sessions allocate and free many small objects across threads; mimalloc keeps
/// that cheap (measured: fewer instructions per new session than glibc malloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The configuration `l7mp` runs on without `-c`: the API and `/metrics` on the admin
/// address, nothing else listening.
const DEFAULT_CONFIG: &str = include_str!("default-config.yaml");

#[derive(Parser, Debug)]
#[command(
    name = "l7mp",
    version,
    about = "A multiprotocol Layer-7 proxy and service-mesh data plane"
)]
struct Cli {
    /// Config file (l7mp YAML or JSON); without it, the embedded default config.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Log level: silly, verbose, info, notice, warn, error, silent.
    #[arg(short = 'l', long = "log-level", value_name = "LEVEL")]
    log_level: Option<String>,
    /// Strict mode, as the original's: configs and API requests are checked against
    /// the schema (required properties, types, enums); unknown fields are reported.
    #[arg(short = 's', long = "strict")]
    strict: bool,
    /// Unknown fields in configs and API requests are errors, not warnings.
    #[arg(long = "reject-unknown-fields")]
    reject_unknown_fields: bool,
    /// Check the config and exit: 0 when it is valid, 2 with the problem otherwise.
    /// Nothing is bound.
    #[arg(long = "check")]
    check: bool,
    /// Where the REST API and /metrics listen; `off` for nowhere. When the config
    /// declares its own controller listener (an HTTP listener routed to
    /// L7mpController), the API is served there and this applies only if given.
    #[arg(long = "admin", value_name = "ADDR", overrides_with = "admin")]
    admin: Option<String>,
    /// Once the API listens, write the address it is bound to (`host:port`) to FILE:
    /// with `--admin 127.0.0.1:0` the kernel picks a free port and this says which.
    #[arg(long = "admin-address-file", value_name = "FILE")]
    admin_address_file: Option<std::path::PathBuf>,
    /// Let API callers without a token (the API is on loopback then) create what
    /// reaches the host: commands, descriptors, files, raw interfaces, plugin grants.
    /// The same as `admin.api_host_access: true` in the config.
    #[arg(long = "api-host-access")]
    api_host_access: bool,
    /// Serve the API beyond loopback without authentication (anyone who reaches it
    /// can run commands as this user): only for a network nobody else is on.
    #[arg(long = "admin-insecure")]
    admin_insecure: bool,
    /// Where compiled Wasm plugins are cached (a directory only this user may write;
    /// created 0700), or `off`. Default: $XDG_CACHE_HOME/l7mp/plugins.
    #[arg(long = "plugin-cache", value_name = "DIR")]
    plugin_cache: Option<String>,
}

const DEFAULT_ADMIN: &str = "127.0.0.1:1234";

impl Cli {
    fn validation(&self) -> l7mp::core::spec::Validation {
        l7mp::core::spec::Validation {
            strict: self.strict,
            reject_unknown: self.reject_unknown_fields,
        }
    }
}

/// A config file's `plugins[].path` are relative to the file, not to where l7mp runs.
fn plugin_paths_relative_to(doc: &mut Value, dir: &std::path::Path) {
    let Some(Value::Array(plugins)) = doc.get_mut("plugins") else {
        return;
    };
    for entry in plugins {
        if let Some(Value::String(path)) = entry.get_mut("path")
            && std::path::Path::new(path.as_str()).is_relative()
        {
            *path = dir.join(&*path).to_string_lossy().into_owned();
        }
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("l7mp: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // Before anything opens a descriptor of its own.
    protocol::pipe::record_inherited();
    let cli = Cli::parse();
    let level = match logging::parse_level(cli.log_level.as_deref().unwrap_or("info")) {
        Ok(level) => level,
        Err(e) => return fail(format!("-l: {e}")),
    };
    logging::init(level);
    // A panic is a bug, never an answer to input: log it in one line. The default hook
    // may symbolize a backtrace, which maps the binary's debug info (hundreds of MiB).
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("internal error (please report it): {info}");
    }));
    raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(l7mp::memory::thread_idle)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let code = runtime.block_on(run(cli));
    // Work still on the blocking pool (a parse, a compile) does not hold up the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

async fn run(cli: Cli) -> ExitCode {
    // What the process has once, handed down from here.
    let services = l7mp::services::Services::new(match cli.plugin_cache.as_deref() {
        Some("off") => None,
        Some(dir) => Some(dir.into()),
        None => plugin::default_cache_dir(),
    });
    let (source, text) = match &cli.config {
        None => ("the default config".to_owned(), DEFAULT_CONFIG.to_owned()),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => (format!("config {}", path.display()), text),
            Err(e) => return fail(format!("cannot read config {}: {e}", path.display())),
        },
    };
    let mut doc: Value = match l7mp::core::spec::document(&text) {
        Ok(doc) => doc,
        Err(e) => return fail(format!("{source}: {e}")),
    };
    if let Some(dir) = cli.config.as_deref().and_then(std::path::Path::parent) {
        plugin_paths_relative_to(&mut doc, dir);
    }
    if cli.check {
        let strict = cli.validation().for_document(&doc);
        // Plugins are compiled and checked, never made current.
        // The config file is the operator's own: it may reach the host.
        let built =
            l7mp::registry::build(&model::Snapshot::default(), strict, &services, true, |b| {
                b.add_config(&doc)
            });
        return match built {
            Ok(change) => {
                let s = &change.snap;
                println!(
                    "{source}: OK ({} listeners, {} clusters, {} rulelists, {} rules, {} routes)",
                    s.listeners.len(),
                    s.clusters.len(),
                    s.rulelists.len(),
                    s.rules.len(),
                    s.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("{source}: {e}")),
        };
    }
    if cli.api_host_access
        && let Some(fields) = doc.as_object_mut()
    {
        let admin = fields
            .entry("admin")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(admin) = admin.as_object_mut() {
            admin.insert("api_host_access".into(), Value::Bool(true));
        }
    }
    let proxy = proxy::Proxy::new(cli.validation(), services);
    if cli.admin_insecure {
        proxy.allow_insecure_api();
    }
    // HTTP listeners whose rules route to the controller serve this API.
    proxy.engine.serve_api(api::router(proxy.clone()));
    if let Err(e) = proxy.load_config(true, doc).await {
        return fail(format!("{source}: {e}"));
    }
    if let Some(level) = &cli.log_level
        && let Err(e) = proxy
            .update_admin(true, &serde_json::json!({ "log_level": level }))
            .await
    {
        return fail(format!("-l: {e}"));
    }

    let snap = proxy.snapshot();
    let has_controller = snap.listeners.keys().any(|l| {
        l7mp::routing::reaches(&snap, l, |c| {
            c.protocol.name() == protocol::controller::CONTROLLER
        })
    });
    let admin = match cli.admin.as_deref() {
        Some("off") => None,
        Some(addr) => Some(addr.to_owned()),
        None if has_controller => None,
        None => Some(DEFAULT_ADMIN.to_owned()),
    };
    let _api = match admin {
        None => None,
        Some(addr) => {
            let addr: SocketAddr = match addr.parse() {
                Ok(a) => a,
                Err(_) => {
                    return fail(format!(
                        "--admin: '{addr}' is not an address like 127.0.0.1:1234"
                    ));
                }
            };
            if !addr.ip().is_loopback() && !proxy.authenticates() {
                if !cli.admin_insecure {
                    return fail(format!(
                        "--admin {addr}: the API would take requests from the network without authentication, and anyone who reaches it can run commands as this user. Configure bearer tokens in the config (admin.auth.tokens, see the README), keep the API on 127.0.0.1, or pass --admin-insecure"
                    ));
                }
                tracing::warn!(
                    "--admin-insecure: the API on {addr} takes requests from the network WITHOUT AUTHENTICATION; anyone who reaches it can run commands as this user"
                );
            }
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => return fail(format!("cannot serve the API on {addr}: {e}")),
            };
            let bound = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let scheme = if proxy.api_tls().is_some() {
                "https"
            } else {
                "http"
            };
            tracing::info!("REST API and /metrics on {scheme}://{bound}");
            let api = tokio::spawn(api::serve(listener, proxy.clone()));
            if let Some(file) = &cli.admin_address_file
                && let Err(e) = write_whole(file, &bound)
            {
                return fail(format!("--admin-address-file {}: {e}", file.display()));
            }
            Some(api)
        }
    };
    tracing::info!("l7mp {} running on {source}", env!("CARGO_PKG_VERSION"));
    shutdown_signal().await;
    tracing::info!("shutting down");
    ExitCode::SUCCESS
}

/// Writes `text` so that a reader never sees half of it: to a file beside, then renamed.
fn write_whole(file: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, file)
}

/// Every session holds sockets: let the soft limit on open files go up to the hard one.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct; a failure leaves the old limit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
