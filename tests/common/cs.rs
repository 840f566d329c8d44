//! Config-center client helpers over real sockets: form posts, whole replies with headers,
//! and the import/export zips, shared by `tests/config.rs` and `tests/bad_input.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::{Server, IO_TIMEOUT};

/// One reply: status, headers (names lower-cased) and body.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (lossy UTF-8).
    pub body: String,
}

impl Reply {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }
}

/// Form-encodes pairs as the Java client does.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                k,
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Sends one request (Connection: close) and reads the whole reply; `timeout` bounds the read.
pub fn send_for(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Reply {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        raw.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut c = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    c.set_read_timeout(Some(timeout)).unwrap();
    c.write_all(raw.as_bytes()).unwrap();
    c.write_all(body.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no reply head: {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&out[split + 4..]).into_owned(),
    }
}

/// [`send_for`] to `s`, bounded by [`IO_TIMEOUT`].
pub fn send(s: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    send_for(s.addr, method, path, headers, body, IO_TIMEOUT)
}

/// The configs path.
pub const CS: &str = "/nacos/v1/cs/configs";

/// Publishes a form of `pairs` (`true` on success).
pub fn publish(s: &Server, pairs: &[(&str, &str)]) -> Reply {
    send(s, "POST", CS, &[], &form(pairs))
}

/// Gets `CS?<query>`.
pub fn get(s: &Server, query: &[(&str, &str)]) -> Reply {
    send(s, "GET", &format!("{CS}?{}", form(query)), &[], "")
}

/// Hex md5, as `Content-MD5`.
pub fn md5_hex(s: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Sends `zip` as the multipart `file` of an import.
pub fn import(s: &Server, query: &str, zip: &[u8]) -> (u16, serde_json::Value) {
    let mut body = Vec::new();
    body.extend_from_slice(b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.zip\"\r\nContent-Type: application/zip\r\n\r\n");
    body.extend_from_slice(zip);
    body.extend_from_slice(b"\r\n--BOUNDARY--\r\n");
    let mut raw = format!(
        "POST {CS}?import=true&{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary=BOUNDARY\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let (status, out) = s.raw(&raw);
    (
        status,
        serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null),
    )
}

/// `GET ?export=true&<query>` (or `?exportV2=…` as given); the zip bytes of a 200.
pub fn export(s: &Server, query: &str) -> Vec<u8> {
    let full = if query.starts_with("exportV2=") {
        query.to_string()
    } else {
        format!("export=true&{query}")
    };
    let raw = format!("GET {CS}?{full} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (status, out) = s.raw(raw.as_bytes());
    assert_eq!(status, 200);
    out
}

/// A zip of `(name, content)` entries.
pub fn zip_of(entries: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Write as _;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, content) in entries {
        z.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(content.as_bytes()).unwrap();
    }
    z.finish().unwrap().into_inner()
}
