//! Logging: tracing with a level and a destination that `POST /api/v1/admin` can change
//! while the proxy runs. l7mp's level names map onto tracing's.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use tracing_appender::non_blocking::WorkerGuard;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, reload};

/// l7mp's log levels, most verbose first.
pub const LEVELS: &[&str] = &[
    "silly", "verbose", "debug", "info", "notice", "warn", "error", "silent",
];

pub fn parse_level(name: &str) -> Result<LevelFilter, String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "silly" | "trace" => LevelFilter::TRACE,
        "verbose" | "debug" => LevelFilter::DEBUG,
        "info" | "notice" => LevelFilter::INFO,
        "warn" | "warning" => LevelFilter::WARN,
        "error" => LevelFilter::ERROR,
        "silent" | "off" => LevelFilter::OFF,
        other => {
            return Err(format!(
                "unknown log level '{other}' (one of {})",
                LEVELS.join(", ")
            ));
        }
    })
}

/// Where log lines go; swappable at run time. Writers never block the thread that logs
/// (see [`sink`]).
#[derive(Clone)]
struct Destination(Arc<Mutex<Sink>>);

impl<'a> MakeWriter<'a> for Destination {
    type Writer = Sink;
    fn make_writer(&'a self) -> Sink {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A line-oriented writer to stdout, stderr or a file, drained by a thread of its own:
/// callers (I/O workers, mostly) hand it bytes and never wait for a slow disk or a full
/// pipe; when it falls far behind, lines are dropped rather than the caller stalled.
pub type Sink = tracing_appender::non_blocking::NonBlocking;

/// An open sink, its writer thread's guard, and the file it writes (device, inode).
type OpenSink = (Sink, WorkerGuard, Option<(u64, u64)>);

/// Open sinks by target; a file rotated away is reopened at the next use.
static SINKS: LazyLock<Mutex<HashMap<String, OpenSink>>> = LazyLock::new(Mutex::default);

fn identity(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The sink for `stdout`, `stderr` or a file path (appended to, created if missing).
pub fn sink(target: &str) -> io::Result<Sink> {
    let mut sinks = SINKS.lock().unwrap_or_else(|p| p.into_inner());
    let file = !matches!(target, "stdout" | "stderr" | "");
    let now = if file { identity(target) } else { None };
    if let Some((sink, _, seen)) = sinks.get(target)
        && (!file || (now.is_some() && *seen == now))
    {
        return Ok(sink.clone());
    }
    let builder = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("l7mp-log");
    let (sink, guard) = match target {
        "stdout" => builder.finish(io::stdout()),
        "stderr" | "" => builder.finish(io::stderr()),
        path => builder.finish(OpenOptions::new().create(true).append(true).open(path)?),
    };
    let seen = if file { identity(target) } else { None };
    if let Some(rotated) = sinks.insert(target.to_owned(), (sink.clone(), guard, seen)) {
        // Its guard flushes what is left, which may take a moment: not on this thread.
        std::thread::spawn(move || drop(rotated));
    }
    Ok(sink)
}

/// Writes one line to a sink (a full sink drops it).
pub fn write_line(sink: &mut Sink, line: &[u8]) {
    let _ = sink.write_all(line);
}

struct Control {
    level: reload::Handle<LevelFilter, Registry>,
    destination: Destination,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Installs the global subscriber. Logs go to stderr until configured otherwise, so
/// that stdout stays free for the `Stdio` cluster.
pub fn init(level: LevelFilter) {
    let Ok(stderr) = sink("stderr") else { return };
    let destination = Destination(Arc::new(Mutex::new(stderr)));
    let (filter, handle) = reload::Layer::new(level);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(destination.clone())
        .with_ansi(false)
        .with_target(false);
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt.with_filter(LevelFilter::TRACE))
        .try_init()
        .is_ok()
    {
        let _ = CONTROL.set(Control {
            level: handle,
            destination,
        });
    }
}

pub fn set_level(name: &str) -> Result<(), String> {
    let level = parse_level(name)?;
    if let Some(c) = CONTROL.get() {
        c.level.modify(|l| *l = level).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `stdout`, `stderr` or a file path (appended to).
pub fn set_file(target: &str) -> Result<(), String> {
    let t = sink(target).map_err(|e| format!("log_file {target}: {e}"))?;
    if let Some(c) = CONTROL.get() {
        *c.destination.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }
    Ok(())
}
