//! End-to-end check of `config-listen` against a tiny fake config server on loopback that
//! holds `configs/listener` polls until a publish changes the listened config's md5, and of
//! `config-publish`'s per-send stamps.
//!
//! Bounded: at most 32 connections, each served for at most 20 s.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_bench::config::{self, ConfigApi, ListenConfig};
use muster_bench::engine::{self, EngineConfig};
use muster_bench::http::{Target, DEFAULT_USER_AGENT};

#[derive(Default)]
struct State {
    /// md5 of each config's content.
    md5: HashMap<String, String>,
    /// Held polls: (data id, the connection to answer).
    held: Vec<(String, TcpStream)>,
    /// Contents published, in order.
    published: Vec<String>,
}

fn form_value<'a>(body: &'a str, key: &str) -> &'a str {
    body.split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("")
}

fn answer(s: &mut TcpStream, body: &str) {
    let r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(r.as_bytes());
}

fn serve(mut s: TcpStream, state: Arc<Mutex<State>>, deadline: Instant) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&pending[end + 4..end + 4 + len]).to_string();
                pending.drain(..end + 4 + len);
                let path = head.split(' ').nth(1).unwrap_or("");
                let mut st = state.lock().unwrap();
                if path.ends_with("/listener") {
                    // Listening-Configs=<dataId>%02DEFAULT_GROUP%02<md5>%01
                    let v = form_value(&body, "Listening-Configs");
                    let fields: Vec<&str> = v.trim_end_matches("%01").split("%02").collect();
                    let (id, md5) = (fields[0].to_string(), fields[2]);
                    let current = st.md5.get(&id).map_or("", String::as_str);
                    if current == md5 {
                        st.held.push((id, s.try_clone().unwrap()));
                    } else {
                        answer(&mut s, &format!("{id}%02DEFAULT_GROUP%01\n"));
                    }
                } else {
                    let id = form_value(&body, "dataId").to_string();
                    let content = form_value(&body, "content").to_string();
                    st.md5.insert(id.clone(), config::md5_hex(&content));
                    st.published.push(content);
                    // Like Muster: the publisher first, then the polls.
                    answer(&mut s, "true");
                    let (woken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.held)
                        .into_iter()
                        .partition(|(k, _)| *k == id);
                    st.held = kept;
                    for (k, mut c) in woken {
                        answer(&mut c, &format!("{k}%02DEFAULT_GROUP%01\n"));
                    }
                }
                continue;
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
    }
}

fn fake_server() -> (std::net::SocketAddr, Arc<Mutex<State>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let state = Arc::new(Mutex::new(State::default()));
    let st = state.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        for c in l.incoming().take(32).flatten() {
            let st = st.clone();
            std::thread::spawn(move || serve(c, st, deadline));
        }
    });
    (addr, state)
}

fn api(addr: std::net::SocketAddr, prefix: &str) -> ConfigApi {
    ConfigApi {
        target: Target::parse(&format!("http://{addr}")).unwrap(),
        user_agent: DEFAULT_USER_AGENT.into(),
        prefix: prefix.into(),
    }
}

#[test]
fn every_publish_answers_the_poll_on_its_config() {
    let (addr, _) = fake_server();
    let cfg = ListenConfig {
        api: api(addr, &config::run_prefix("t")),
        listeners: 8,
        keys: 8,
        write_rate: 20.0,
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(1),
        grace: Duration::from_millis(500),
        timeout: Duration::from_secs(5),
        progress: None,
    };
    let r = config::run_listen(&cfg).unwrap();
    assert_eq!(r.held, 8);
    assert_eq!(r.writes.ok, 20, "{:?}", r.writes.errors);
    // 20 publishes over 8 configs: each answers the one poll on its config.
    assert_eq!(r.wake.ok, 20, "{:?}", r.wake.errors);
    assert_eq!(r.wake.error_count(), 0);
    assert_eq!(r.poll_errors.error_count(), 0);
    assert_eq!(r.wake_from_send.ok, 20);
}

#[test]
fn one_config_wakes_every_poll() {
    let (addr, _) = fake_server();
    let cfg = ListenConfig {
        api: api(addr, &config::run_prefix("u")),
        listeners: 6,
        keys: 1,
        write_rate: 5.0,
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(1),
        grace: Duration::from_millis(500),
        timeout: Duration::from_secs(5),
        progress: None,
    };
    let r = config::run_listen(&cfg).unwrap();
    assert_eq!(r.writes.ok, 5);
    assert_eq!(r.wake.ok, 30, "{:?}", r.wake.errors);
    assert_eq!(r.wake.error_count(), 0);
}

#[test]
fn publishes_carry_a_new_content_every_send() {
    let (addr, state) = fake_server();
    let a = api(addr, "p");
    let w = config::publish(&a, 2, 3, 64);
    let cfg = EngineConfig {
        addr,
        spread: Vec::new(),
        threads: 1,
        warmup: Duration::ZERO,
        duration: Duration::from_millis(300),
        rate: Some(40.0),
        timeout: Duration::from_secs(5),
        progress: None,
    };
    let r = engine::run(&cfg, w);
    assert!(r.total.ok >= 5, "{:?}", r.total.errors);
    let st = state.lock().unwrap();
    let mut seen = st.published.clone();
    assert!(seen.iter().all(|c| c.len() == 64));
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), st.published.len(), "a content was sent twice");
}
