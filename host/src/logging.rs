//! Logging: tracing with a level and a destination that `POST /api/v1/admin` can change
//! while the proxy runs. l7mp's level names map onto tracing's.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock};

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

#[derive(Clone)]
enum Target {
    Stdout,
    Stderr,
    File(Arc<Mutex<File>>),
}

/// Where log lines go; swappable at run time.
#[derive(Clone)]
struct Destination(Arc<Mutex<Target>>);

struct Line(Target);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.0 {
            Target::Stdout => io::stdout().lock().write(buf),
            Target::Stderr => io::stderr().lock().write(buf),
            Target::File(f) => f.lock().unwrap_or_else(|p| p.into_inner()).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Destination {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(self.0.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

struct Control {
    level: reload::Handle<LevelFilter, Registry>,
    destination: Destination,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Installs the global subscriber. Logs go to stderr until configured otherwise, so
/// that stdout stays free for the `Stdio` cluster.
pub fn init(level: LevelFilter) {
    let destination = Destination(Arc::new(Mutex::new(Target::Stderr)));
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
    let t = match target {
        "stdout" => Target::Stdout,
        "stderr" | "" => Target::Stderr,
        path => Target::File(Arc::new(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("log_file {path}: {e}"))?,
        ))),
    };
    if let Some(c) = CONTROL.get() {
        *c.destination.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }
    Ok(())
}
