//! What a Wasm plugin costs: per 1 KiB chunk through a Rust transform (against the
//! built-in Echo transform as the baseline), and per session (a fresh instance, and
//! one taken from the idle pool).
//!
//! Needs the example plugins built first (`bench/run` does it):
//! `cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml`,
//! then `cargo bench -p l7mp --bench plugins`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use l7mp::core::Transform;
use l7mp::core::stage::Detached;
use l7mp::plugin::usage::PluginUse;
use l7mp::plugin::{self, Instance, PluginVersion};

fn load(name: &str, file: &str) -> Arc<PluginVersion> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/target/wasm32-wasip2/release/"
    );
    let bytes = std::fs::read(format!("{path}{file}")).unwrap_or_else(|e| {
        panic!("{path}{file}: {e}: build the plugins first (see this file's header)")
    });
    let rt = host().runtime();
    let version = rt.compile(name, "1", &bytes).expect("the plugin compiles");
    rt.plugins.add(version).expect("a new plugin")
}

/// The benchmark's plugin runtime, as a proxy has one.
fn host() -> &'static Arc<plugin::PluginHost> {
    static HOST: std::sync::OnceLock<Arc<plugin::PluginHost>> = std::sync::OnceLock::new();
    HOST.get_or_init(|| plugin::PluginHost::new(Arc::new(l7mp::metrics::Metrics::new()), None))
}

fn usage(name: &str, config: serde_json::Value) -> PluginUse {
    serde_json::from_value(json!({"plugin": name, "config": config})).unwrap()
}

fn chunks(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let chunk = vec![b'x'; 1024];
    let mut group = c.benchmark_group("per_1kib_chunk");
    group.bench_function("builtin_echo", |b| {
        let cx = Detached::new("s", json!({}));
        let mut echo = l7mp::transform::echo::Echo;
        let mut out = Vec::with_capacity(1);
        let bytes = Bytes::from(chunk.clone());
        b.iter(|| {
            rt.block_on(echo.process(bytes.clone(), &cx, &mut out))
                .unwrap();
            black_box(out.pop());
        })
    });
    for (name, file, config) in [
        ("wasm_passthrough", "hostile.wasm", json!({})),
        ("wasm_rewrite", "rewrite.wasm", json!({"prepend": "> "})),
    ] {
        let version = load(name, file);
        let usage = usage(name, config);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut instance = version
                        .take(&usage, None, &host().runtime().plugins)
                        .await
                        .unwrap();
                    let session = instance
                        .open("{}", &usage.config_json)
                        .await
                        .unwrap()
                        .unwrap();
                    let start = Instant::now();
                    for _ in 0..iters {
                        let output = instance
                            .transform_hook(session, false, &chunk)
                            .await
                            .unwrap()
                            .unwrap();
                        black_box(output);
                    }
                    let elapsed = start.elapsed();
                    instance.release(session).await;
                    elapsed
                })
            })
        });
    }
    group.finish();
}

fn sessions(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let version = load("session", "rewrite.wasm");
    let usage = usage("session", json!({"prepend": "> "}));
    let mut group = c.benchmark_group("per_session");
    // A fresh instance: what every session would pay without the pool (and what the
    // first sessions and those after a fault pay).
    group.bench_function("fresh_instance_and_open", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut instance = Instance::new(&version, &usage.limits, &usage.grants)
                        .await
                        .unwrap();
                    let session = instance
                        .open("{}", &usage.config_json)
                        .await
                        .unwrap()
                        .unwrap();
                    instance.release(session).await;
                    black_box(instance);
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("fresh_instance_only", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let instance = Instance::new(&version, &usage.limits, &usage.grants)
                        .await
                        .unwrap();
                    black_box(instance);
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("pooled_instance_and_open", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut instance = version
                        .take(&usage, None, &host().runtime().plugins)
                        .await
                        .unwrap();
                    let session = instance
                        .open("{}", &usage.config_json)
                        .await
                        .unwrap()
                        .unwrap();
                    instance.release(session).await;
                    version.give_back(instance, &usage);
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn all(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    chunks(c, &rt);
    sessions(c, &rt);
}

criterion_group!(benches, all);
criterion_main!(benches);
