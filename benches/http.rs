//! The HTTP/1.1 request head parser on the hot requests: a Java client's register (query
//! string, form body headers) and a list with a `User-Agent`, as they arrive on the wire.
//!
//! Run: `cargo bench --bench http`. Inputs are fixed.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const REGISTER: &[u8] = b"POST /nacos/v1/ns/instance?serviceName=DEFAULT_GROUP%40%40svc-42&groupName=DEFAULT_GROUP&namespaceId=public&ip=10.0.3.17&port=8080&weight=1.0&enable=true&healthy=true&ephemeral=true&clusterName=DEFAULT&metadata=%7B%7D HTTP/1.1\r\nUser-Agent: Nacos-Java-Client:v1.4.6\r\nClient-Version: 1.4.6\r\nRequestId: 0f4a2b9c-1e77-4f5e-8d2e-6a0c3b1d9e21\r\nRequest-Module: Naming\r\nContent-Type: application/x-www-form-urlencoded;charset=UTF-8\r\nAccept-Charset: UTF-8\r\nAccept-Encoding: gzip,deflate,sdch\r\nHost: 127.0.0.1:8848\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n";
const LIST: &[u8] = b"GET /nacos/v1/ns/instance/list?serviceName=DEFAULT_GROUP%40%40svc-42&clusters=&healthyOnly=true&namespaceId=public HTTP/1.1\r\nUser-Agent: Nacos-Java-Client:v1.4.6\r\nHost: 127.0.0.1:8848\r\n\r\n";

fn bench_head(c: &mut Criterion) {
    let mut g = c.benchmark_group("http_head");
    for (name, raw) in [("register", REGISTER), ("list", LIST)] {
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let head = muster::http::parse_head(std::hint::black_box(raw), 16 << 10)
                    .expect("valid head")
                    .expect("complete head");
                assert_eq!(head.len(), raw.len());
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = bench_head
}
criterion_main!(benches);
