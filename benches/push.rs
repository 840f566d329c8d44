//! The push round's send path and the list-cache arena.
//!
//! - `push_round_100`: one datagram (1 KiB) to each of 100 loopback subscribers, as one
//!   `sendmmsg` batch ([`muster::node::udp::send_batch`]) and, for comparison, as 100 `sendto`s.
//!   Receivers are drained between iterations so socket buffers never fill.
//! - `arena_store`: caching a 25 KiB host array in the memfd arena (written once, later sent
//!   with `sendfile`) against a plain heap copy.
//!
//! Run: `cargo bench --bench push`. Traffic stays on 127.0.0.1.

mod common;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use muster::naming::push::Outgoing;
use muster::node::udp::send_batch;

const SUBSCRIBERS: usize = 100;

fn drain(rx: &[UdpSocket], buf: &mut [u8]) {
    for s in rx {
        while s.recv(buf).is_ok() {}
    }
}

fn bench_push_round(c: &mut Criterion) {
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rx: Vec<UdpSocket> = (0..SUBSCRIBERS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let packet = Bytes::from(vec![b'x'; 1024]);
    let out: Vec<Outgoing> = rx
        .iter()
        .map(|s| Outgoing {
            addr: s.local_addr().unwrap(),
            packet: packet.clone(),
            resend: false,
        })
        .collect();
    let mut buf = vec![0u8; 2048];
    let mut g = c.benchmark_group("push_round_100");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    g.bench_function("sendmmsg", |b| {
        b.iter(|| {
            let batch: Vec<&Outgoing> = out.iter().collect();
            let sent = send_batch(tx.as_raw_fd(), &batch);
            drain(&rx, &mut buf);
            sent
        })
    });
    g.bench_function("sendto_each", |b| {
        b.iter(|| {
            let mut sent = 0;
            for o in &out {
                sent += usize::from(tx.send_to(&o.packet, o.addr).is_ok());
            }
            drain(&rx, &mut buf);
            sent
        })
    });
    g.finish();
}

fn bench_arena(c: &mut Criterion) {
    let body: Vec<u8> = (0..25 * 1024).map(|i| (i % 251) as u8).collect();
    let mut g = c.benchmark_group("arena_store_25k");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("memfd_arena", |b| {
        b.iter(|| muster::arena::store(&body).expect("arena"))
    });
    g.bench_function("heap_copy", |b| b.iter(|| Bytes::copy_from_slice(&body)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = bench_push_round, bench_arena
}
criterion_main!(benches);
