//! What a restart costs per persistent record (the perf row "restart with 1M persistent
//! records"), on 100k records over 100 services:
//!
//! - `snapshot_encode_100k` / `snapshot_decode_100k`: [`Durable::encode`] and
//!   [`Durable::decode`] of the binary snapshot image.
//! - `fold_ops_100k`: decoding 100k logged `register` op bodies (binary, as the WAL holds
//!   them) and folding them into an empty [`Durable`]; `fold_json_ops_100k` the same for the
//!   JSON bodies of Muster 0.1 logs.
//! - `roster_build_1000`: a 1000-instance roster built in one go (a restored service).
//!
//! Run: `cargo bench --bench recovery`.

mod common;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use muster::consensus::naming::Durable;
use muster::naming::instance::{Instance, InstanceSpec, Timing};
use muster::naming::op::PersistentOp;
use muster::naming::roster::Roster;
use muster::naming::service::ServiceKey;

const RECORDS: u32 = 100_000;
const SERVICES: u32 = 100;

fn spec(n: u32) -> InstanceSpec {
    let mut s = InstanceSpec::new(
        &format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255),
        8080,
    );
    s.ephemeral = false;
    s
}

fn ops() -> Vec<(ServiceKey, Vec<u8>)> {
    (0..RECORDS)
        .map(|n| {
            let key = ServiceKey::new("public", &format!("DEFAULT_GROUP@@svc-{}", n % SERVICES));
            let op = PersistentOp::Register { instance: spec(n) };
            (key, op.encode_body())
        })
        .collect()
}

fn durable() -> Durable {
    let mut d = Durable::default();
    for (key, body) in ops() {
        d.apply_change_owned(&key, PersistentOp::decode_body(&body).unwrap());
    }
    d
}

fn bench_recovery(c: &mut Criterion) {
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(RECORDS)));
    let d = durable();
    g.bench_function("snapshot_encode_100k", |b| b.iter(|| d.encode()));
    let image = d.encode();
    g.bench_function("snapshot_decode_100k", |b| {
        b.iter(|| Durable::decode(&image).unwrap())
    });
    let fold = |logged: &[(ServiceKey, Vec<u8>)]| {
        let mut d = Durable::default();
        for (key, body) in logged {
            d.apply_change_owned(key, PersistentOp::decode_body(body).unwrap());
        }
        d
    };
    let logged = ops();
    g.bench_function("fold_ops_100k", |b| b.iter(|| fold(&logged)));
    let json: Vec<_> = logged
        .iter()
        .map(|(k, body)| {
            let op = PersistentOp::decode_body(body).unwrap();
            (k.clone(), serde_json::to_vec(&op).unwrap())
        })
        .collect();
    g.bench_function("fold_json_ops_100k", |b| b.iter(|| fold(&json)));
    g.finish();

    let mut g = c.benchmark_group("roster");
    g.throughput(Throughput::Elements(1000));
    let insts: Vec<Arc<Instance>> = (0..1000)
        .map(|n| {
            let s = spec(n);
            Arc::new(Instance::build(
                &s,
                Arc::from("DEFAULT"),
                muster::naming::instance::Host::from(s.ip.as_str()),
                None,
                true,
                Timing::default(),
            ))
        })
        .collect();
    g.bench_function("roster_build_1000", |b| {
        b.iter(|| insts.iter().cloned().collect::<Roster>())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = bench_recovery
}
criterion_main!(benches);
