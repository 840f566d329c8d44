//! Hot paths of the registry: applying a register (one hot service, and spread over 1000
//! services), a light beat, and rendering `instance/list`, for services of 1, 10, 100 and 1000
//! instances.
//!
//! Run: `cargo bench --bench registry`. Inputs are deterministic.

mod common;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use muster::naming::instance::InstanceSpec;
use muster::naming::registry::{Lifecycle, Registry};
use muster::naming::service::{Metadata, ServiceKey};
use muster::naming::view::{ListQuery, ReadView};
use muster::naming::write::Write;

const SIZES: [usize; 4] = [1, 10, 100, 1000];

fn spec(i: usize) -> InstanceSpec {
    let mut metadata = Metadata::new();
    metadata.insert("version".into(), "1.2.3".into());
    metadata.insert("zone".into(), format!("z{}", i % 3));
    InstanceSpec {
        metadata,
        ..InstanceSpec::new(
            &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
            8080,
        )
    }
}

/// A registry whose service `orders` holds `n` instances.
fn filled(n: usize) -> (Registry, Arc<ReadView>, ServiceKey) {
    let view = Arc::new(ReadView::default());
    let mut reg = Registry::new(Lifecycle::default(), view.clone(), 0);
    let key = ServiceKey::new("public", "DEFAULT_GROUP@@orders");
    for i in 0..n {
        reg.apply(&key, Write::Register(spec(i)), 0).unwrap();
    }
    reg.flush(0);
    (reg, view, key)
}

fn query(cache_hit: bool) -> ListQuery<'static> {
    ListQuery {
        clusters_raw: if cache_hit { "" } else { "DEFAULT" },
        clusters: if cache_hit { vec![] } else { vec!["DEFAULT"] },
        healthy_only: true,
        grouped: true,
        cache_millis: 3000,
        env: "",
        is_check: false,
        now_wall_ms: 1_700_000_000_000,
    }
}

/// Updating one instance of a service of `n` (a re-register with a changed weight, then the
/// publish), as a PUT does.
fn bench_register(c: &mut Criterion) {
    let mut g = c.benchmark_group("register_apply_publish");
    for n in SIZES {
        let (mut reg, _view, key) = filled(n);
        let s = spec(n / 2);
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut t = 1;
            b.iter(|| {
                t += 1;
                // Alternate the weight: an unchanged re-register is a no-op (lease renewal only).
                let mut s = s.clone();
                s.weight = (t % 2 + 1) as f64;
                reg.apply(&key, Write::Register(s), t).unwrap();
                reg.flush(t)
            })
        });
    }
    g.finish();
}

/// Re-registering instances spread over 1000 services of 200 instances each, a different
/// service every time: what a register costs when the service is not hot in the cache (the
/// publish must not touch every instance of the service).
fn bench_register_spread(c: &mut Criterion) {
    const SERVICES: usize = 1000;
    const PER: usize = 200;
    let view = Arc::new(ReadView::default());
    let mut reg = Registry::new(Lifecycle::default(), view.clone(), 0);
    let keys: Vec<ServiceKey> = (0..SERVICES)
        .map(|s| ServiceKey::new("public", &format!("DEFAULT_GROUP@@svc{s}")))
        .collect();
    for (s, key) in keys.iter().enumerate() {
        for i in 0..PER {
            reg.apply(key, Write::Register(spec(s * PER + i)), 0)
                .unwrap();
        }
    }
    reg.flush(0);
    let mut g = c.benchmark_group("register_spread_1000x200");
    g.throughput(Throughput::Elements(1));
    g.bench_function("update", |b| {
        let mut t = 1u64;
        let mut n = 0usize;
        b.iter(|| {
            t += 1;
            n = (n + 7919) % (SERVICES * PER);
            let mut s = spec(n);
            s.weight = (t % 2 + 1) as f64;
            reg.apply(&keys[n / PER], Write::Register(s), t).unwrap();
            reg.flush(t)
        })
    });
    g.finish();
}

/// A light beat for one instance of a service of `n`: a lookup and a stamp, no publish.
fn bench_beat(c: &mut Criterion) {
    let mut g = c.benchmark_group("beat_light");
    for n in SIZES {
        let (mut reg, _view, key) = filled(n);
        let ip = spec(n / 2).ip;
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut t = 1;
            b.iter(|| {
                t += 1;
                let cmd = Write::Beat {
                    ip: ip.clone(),
                    port: 8080,
                    cluster: "DEFAULT".into(),
                    register: None,
                };
                reg.apply(&key, cmd, t).unwrap();
                reg.flush(t)
            })
        });
    }
    g.finish();
}

/// Rendering a list: from the per-revision cache (all clusters) and uncached (a cluster filter).
fn bench_list(c: &mut Criterion) {
    for (name, cached) in [
        ("list_render_cached", true),
        ("list_render_filtered", false),
    ] {
        let mut g = c.benchmark_group(name);
        for n in SIZES {
            let (_reg, view, key) = filled(n);
            let v = view.get(key.as_ref()).unwrap();
            let q = query(cached);
            let bytes: usize = v.render_list(&q).unwrap().iter().map(|b| b.len()).sum();
            g.throughput(Throughput::Bytes(bytes as u64));
            g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| {
                    let chunks = view.get(key.as_ref()).unwrap().render_list(&q).unwrap();
                    let mut out = Vec::with_capacity(bytes);
                    for c in &chunks {
                        out.extend_from_slice(c);
                    }
                    out
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = bench_register, bench_register_spread, bench_beat, bench_list
}
criterion_main!(benches);
