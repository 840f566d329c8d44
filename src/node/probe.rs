//! Health probes of persistent instances, run over real sockets on the shard's executor. What
//! to probe and when is the naming layer's schedule (`naming::probe`).

use std::net::SocketAddr;
use std::time::Instant;

use crate::naming::probe::{Checker, Outcome, Probe, PROBE_TIMEOUT};

/// Runs one probe over real sockets on the current glommio executor.
pub async fn run(p: &Probe) -> Outcome {
    let start = Instant::now();
    let stream = match glommio::net::TcpStream::connect_timeout(p.addr, PROBE_TIMEOUT).await {
        Ok(s) => s,
        Err(e) => return connect_failure(&e),
    };
    match &p.checker {
        Checker::Tcp => Outcome::Ok(start.elapsed().as_millis() as u64),
        Checker::Http { path, headers } => http(stream, p.addr, path, headers, start).await,
    }
}

fn connect_failure(e: &glommio::GlommioError<()>) -> Outcome {
    let text = e.to_string().to_ascii_lowercase();
    if text.contains("refused") {
        Outcome::FailNow
    } else {
        Outcome::Fail
    }
}

async fn http(
    mut stream: glommio::net::TcpStream,
    addr: SocketAddr,
    path: &str,
    headers: &str,
    start: Instant,
) -> Outcome {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Muster-Health-Checker\r\nConnection: close\r\n");
    for h in headers.split('|') {
        if let Some((k, v)) = h.split_once(':') {
            if !k.trim().is_empty() && !k.contains(['\r', '\n']) && !v.contains(['\r', '\n']) {
                req.push_str(&format!("{}: {}\r\n", k.trim(), v.trim()));
            }
        }
    }
    req.push_str("\r\n");
    if stream.write_all(req.as_bytes()).await.is_err() {
        return Outcome::Fail;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < buf.len() {
        match stream.read(&mut buf[n..]).await {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if buf[..n].contains(&b'\n') {
                    break;
                }
            }
            Err(_) => return Outcome::Fail,
        }
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let code: Option<u16> = line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    match code {
        Some(200) => Outcome::Ok(start.elapsed().as_millis() as u64),
        Some(503) | Some(302) => Outcome::Fail,
        Some(_) => Outcome::FailNow,
        None => Outcome::Fail,
    }
}
