//! Long-poll listeners (`POST /nacos/v1/cs/configs/listener`): the `Listening-Configs` format,
//! the answer's format, and [`Holds`], one shard's registry of held polls.
//!
//! A held poll is one entry in [`Holds`] (its listened keys and md5s, a waker slot) plus the
//! connection task that already serves its request: no task, timer or channel per key. The
//! shard wakes the polls listening to a key when the raft thread tells it the key changed.

use std::collections::{HashMap, HashSet};
use std::task::Waker;

/// Most keys one `Listening-Configs` may carry (`MD5Util.getClientMd5Map`).
pub const MAX_KEYS: usize = 10_000;
/// Shortest hold, in ms (`LongPollingService`: `max(10000, timeout − 500)`).
pub const MIN_HOLD_MS: u64 = 10_000;
/// What `LongPollingService` takes off the client's timeout, in ms.
pub const HOLD_DELAY_MS: i64 = 500;
/// Longest hold, in ms. Nacos has no cap; this bounds how long an absurd
/// `Long-Pulling-Timeout` keeps a connection (clients send 30 000).
pub const MAX_HOLD_MS: u64 = 600_000;

/// One listened config: its ids and the md5 the client holds (`""` when it has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listened {
    /// Data id.
    pub data_id: String,
    /// Group.
    pub group: String,
    /// Namespace (`""` for public).
    pub tenant: String,
    /// The client's md5.
    pub md5: String,
}

/// Why a `Listening-Configs` value is refused (400 `invalid probeModify`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// Blank, or not decodable.
    #[error("invalid probeModify")]
    Invalid,
    /// A line with more than four fields.
    #[error("invalid probeModify")]
    TooManyFields,
    /// A line with fewer than three fields.
    #[error("invalid probeModify")]
    TooFewFields,
    /// More than [`MAX_KEYS`] keys.
    #[error("invalid probeModify")]
    TooManyKeys,
}

/// Java's `URLDecoder.decode(s, "UTF-8")`, which Nacos applies to the (already form-decoded)
/// value once more: `+` is a space, `%XX` a byte; a broken escape is an error.
pub fn url_decode_again(s: &str) -> Result<String, ListenError> {
    if !s.contains(['%', '+']) {
        return Ok(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or(ListenError::Invalid)?;
                let h = std::str::from_utf8(hex).map_err(|_| ListenError::Invalid)?;
                out.push(u8::from_str_radix(h, 16).map_err(|_| ListenError::Invalid)?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ListenError::Invalid)
}

/// Parses `Listening-Configs` as `MD5Util.getClientMd5Map` does, after the second decode:
/// lines end in `\x01`, fields are split by `\x02`: `dataId␂group␂md5` or
/// `dataId␂group␂md5␂tenant`. A repeated key keeps its last md5 (a map in Nacos). Bytes after
/// the last `\x01` are ignored, as Nacos ignores them.
pub fn parse_listening(value: &str) -> Result<Vec<Listened>, ListenError> {
    if value.trim().is_empty() {
        return Err(ListenError::Invalid);
    }
    let decoded = url_decode_again(value)?;
    let mut out: Vec<Listened> = Vec::new();
    let mut index: HashMap<(String, String, String), usize> = HashMap::new();
    let mut rest = decoded.as_str();
    // Bounded: each turn consumes one line; more than MAX_KEYS distinct keys is refused.
    while let Some(end) = rest.find('\x01') {
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let fields: Vec<&str> = line.split('\x02').collect();
        let (data_id, group, md5, tenant) = match fields.as_slice() {
            [d, g, m] => (*d, *g, *m, ""),
            [d, g, m, t] => (*d, *g, *m, *t),
            f if f.len() > 4 => return Err(ListenError::TooManyFields),
            _ => return Err(ListenError::TooFewFields),
        };
        let k = (data_id.to_string(), group.to_string(), tenant.to_string());
        match index.get(&k) {
            Some(&i) => out[i].md5 = md5.to_string(),
            None => {
                if out.len() >= MAX_KEYS {
                    return Err(ListenError::TooManyKeys);
                }
                index.insert(k, out.len());
                out.push(Listened {
                    data_id: data_id.to_string(),
                    group: group.to_string(),
                    tenant: tenant.to_string(),
                    md5: md5.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// The hold of a long poll in ms: `max(10000, Long-Pulling-Timeout − 500)` (Java's
/// `Long.parseLong`, so a negative value is the minimum), at most [`MAX_HOLD_MS`].
pub fn hold_ms(long_pulling_timeout_ms: i64) -> u64 {
    let ms = long_pulling_timeout_ms.saturating_sub(HOLD_DELAY_MS);
    u64::try_from(ms)
        .unwrap_or(0)
        .clamp(MIN_HOLD_MS, MAX_HOLD_MS)
}

/// The answer naming changed configs: Java's `URLEncoder.encode` of
/// `dataId␂group[␂tenant]␁…`, then a newline (`println`).
pub fn changed_body<'a>(changed: impl IntoIterator<Item = &'a Listened>) -> String {
    let mut raw = String::new();
    for l in changed {
        raw.push_str(&l.data_id);
        raw.push('\x02');
        raw.push_str(&l.group);
        if !l.tenant.trim().is_empty() {
            raw.push('\x02');
            raw.push_str(&l.tenant);
        }
        raw.push('\x01');
    }
    let mut out = java_url_encode(&raw);
    out.push('\n');
    out
}

/// Java's `URLEncoder.encode(s, "UTF-8")`: `A-Za-z0-9.-*_` as they are, space as `+`, every
/// other byte as `%XX` (upper case).
pub fn java_url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// How a held poll ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// These listened entries (indexes into the poll's list) changed.
    Changed(Vec<usize>),
    /// The server is stopping: answer empty at once.
    Released,
}

/// One held poll.
#[derive(Debug)]
struct Held {
    /// What it listens to, in the client's order.
    listened: Vec<Listened>,
    /// The client's address (beta copies are chosen by it).
    ip: String,
    /// The `Vipserver-Tag` header, or `""`.
    tag: String,
    /// Set once the poll is to be answered.
    wake: Option<Wake>,
    /// The connection task to wake.
    waker: Option<Waker>,
}

/// One shard's held polls, by id and by listened group key.
///
/// Invariant: a poll is in `by_key` under each of its keys exactly while it waits (`wake` is
/// `None`); [`Holds::remove`] takes it out of both maps.
#[derive(Debug, Default)]
pub struct Holds {
    next: u64,
    polls: HashMap<u64, Held>,
    /// Waiting polls by listened group key. A set, so that taking a poll out is O(1) however
    /// many polls listen to the same key (10,000 polls woken by one publish).
    by_key: HashMap<String, HashSet<u64>>,
    stopping: bool,
}

impl Holds {
    /// Holds a poll; returns its id. When the shard is stopping the poll is released at once.
    pub fn hold(&mut self, listened: Vec<Listened>, ip: &str, tag: &str, keys: Vec<String>) -> u64 {
        self.next += 1;
        let id = self.next;
        let wake = self.stopping.then_some(Wake::Released);
        if wake.is_none() {
            for k in keys {
                self.by_key.entry(k).or_default().insert(id);
            }
        }
        self.polls.insert(
            id,
            Held {
                listened,
                ip: ip.to_string(),
                tag: tag.to_string(),
                wake,
                waker: None,
            },
        );
        id
    }

    /// Polls held (waiting or answered but not yet removed).
    pub fn len(&self) -> usize {
        self.polls.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.polls.is_empty()
    }

    /// Wakes the waiting polls that listen to `group_key` and for which `stale(listened, ip,
    /// tag)` says the client's md5 is out of date; returns how many were woken.
    pub fn changed(
        &mut self,
        group_key: &str,
        key_of: impl Fn(&Listened) -> String,
        stale: impl Fn(&Listened, &str, &str) -> bool,
    ) -> usize {
        let Some(ids) = self.by_key.get(group_key) else {
            return 0;
        };
        let ids: Vec<u64> = ids.iter().copied().collect();
        let mut woken = 0;
        for id in ids {
            let Some(p) = self.polls.get_mut(&id) else {
                continue;
            };
            if p.wake.is_some() {
                continue;
            }
            let changed: Vec<usize> = p
                .listened
                .iter()
                .enumerate()
                .filter(|(_, l)| key_of(l) == group_key && stale(l, &p.ip, &p.tag))
                .map(|(i, _)| i)
                .collect();
            if changed.is_empty() {
                continue;
            }
            p.wake = Some(Wake::Changed(changed));
            if let Some(w) = p.waker.take() {
                w.wake();
            }
            woken += 1;
            let keys: Vec<String> = p.listened.iter().map(&key_of).collect();
            self.unindex(id, keys);
        }
        woken
    }

    /// Releases every poll (shutdown) and refuses to hold new ones.
    pub fn release_all(&mut self) {
        self.stopping = true;
        self.by_key.clear();
        for p in self.polls.values_mut() {
            if p.wake.is_none() {
                p.wake = Some(Wake::Released);
            }
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
    }

    /// The poll's outcome if it has one; otherwise stores `waker` to be woken.
    pub fn poll(&mut self, id: u64, waker: &Waker) -> Option<Wake> {
        let p = self.polls.get_mut(&id)?;
        match p.wake.take() {
            Some(w) => Some(w),
            None => {
                p.waker = Some(waker.clone());
                None
            }
        }
    }

    /// The listened entries of a poll.
    pub fn listened(&self, id: u64) -> Option<&[Listened]> {
        self.polls.get(&id).map(|p| p.listened.as_slice())
    }

    /// Forgets a poll (answered, timed out or its connection gone).
    pub fn remove(&mut self, id: u64, keys: Vec<String>) -> Option<Vec<Listened>> {
        self.unindex(id, keys);
        self.polls.remove(&id).map(|p| p.listened)
    }

    fn unindex(&mut self, id: u64, keys: Vec<String>) {
        for k in keys {
            if let Some(v) = self.by_key.get_mut(&k) {
                v.remove(&id);
                if v.is_empty() {
                    self.by_key.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(d: &str, t: &str, md5: &str) -> Listened {
        Listened {
            data_id: d.into(),
            group: "G".into(),
            tenant: t.into(),
            md5: md5.into(),
        }
    }

    #[test]
    fn listening_lines_parse_like_md5_util() {
        let v = parse_listening("a\x02G\x02m1\x01b\x02G\x02m2\x02dev\x01").unwrap();
        assert_eq!(v, [l("a", "", "m1"), l("b", "dev", "m2")]);
        // Python always sends the tenant, possibly empty.
        assert_eq!(
            parse_listening("a\x02G\x02\x02\x01").unwrap(),
            [l("a", "", "")]
        );
        // Decoded once more: %02 and %01 are separators too.
        assert_eq!(
            parse_listening("a%02G%02m1%01").unwrap(),
            [l("a", "", "m1")]
        );
        assert_eq!(parse_listening(" "), Err(ListenError::Invalid));
        assert_eq!(
            parse_listening("a\x02G\x02m\x02t\x02x\x01"),
            Err(ListenError::TooManyFields)
        );
        assert_eq!(
            parse_listening("a\x02G\x01"),
            Err(ListenError::TooFewFields)
        );
        assert_eq!(parse_listening("a%zz"), Err(ListenError::Invalid));
        let many: String = (0..=MAX_KEYS)
            .map(|i| format!("d{i}\x02G\x02m\x01"))
            .collect();
        assert_eq!(parse_listening(&many), Err(ListenError::TooManyKeys));
        let max: String = (0..MAX_KEYS)
            .map(|i| format!("d{i}\x02G\x02m\x01"))
            .collect();
        assert_eq!(parse_listening(&max).unwrap().len(), MAX_KEYS);
    }

    #[test]
    fn holds_and_answers() {
        assert_eq!(hold_ms(30_000), 29_500);
        assert_eq!(hold_ms(3_000), 10_000);
        assert_eq!(hold_ms(-7), 10_000);
        assert_eq!(hold_ms(i64::MAX), MAX_HOLD_MS);
        assert_eq!(
            changed_body(&[l("app.yaml", "", ""), l("b", "dev", "")]),
            "app.yaml%02G%01b%02G%02dev%01\n"
        );
        assert_eq!(java_url_encode("a b:c"), "a+b%3Ac");
    }

    #[test]
    fn the_registry_wakes_only_stale_listeners_of_the_key() {
        let key = |l: &Listened| format!("{}+{}", l.data_id, l.group);
        let mut h = Holds::default();
        let a = h.hold(vec![l("a", "", "old")], "ip", "", vec!["a+G".into()]);
        let b = h.hold(
            vec![l("b", "", "x"), l("a", "", "new")],
            "ip",
            "",
            vec!["b+G".into(), "a+G".into()],
        );
        assert_eq!(h.len(), 2);
        // The new md5 is "new": only the poll holding "old" is stale.
        let stale = |l: &Listened, _: &str, _: &str| l.md5 != "new";
        assert_eq!(h.changed("a+G", key, stale), 1);
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            std::task::Poll::Ready(cx.waker().clone())
        }));
        assert_eq!(h.poll(a, &waker), Some(Wake::Changed(vec![0])));
        assert_eq!(h.poll(b, &waker), None);
        assert!(h.remove(a, vec!["a+G".into()]).is_some());
        h.release_all();
        assert_eq!(h.poll(b, &waker), Some(Wake::Released));
        h.remove(b, vec!["b+G".into(), "a+G".into()]);
        assert!(h.is_empty());
        let c = h.hold(vec![l("c", "", "")], "ip", "", vec!["c+G".into()]);
        assert_eq!(
            h.poll(c, &waker),
            Some(Wake::Released),
            "no hold once stopping"
        );
    }
}
