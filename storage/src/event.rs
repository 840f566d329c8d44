//! The event envelope (FORMAT.md §8) the server puts in raft entry `data`, so `muster-wal` can
//! filter by service and show a service's history without knowing the server's types.

use rkyv::util::AlignedVec;

/// Prefix of events written since the state machine has domains: `"MEV2"` and 4 zero bytes
/// (keeps the archive 8-aligned).
pub const EVENT_MAGIC: &[u8; 8] = b"MEV2\0\0\0\0";
/// Prefix of events written before domains (format 1). They all belong to the `naming` domain.
pub const EVENT_MAGIC_V1: &[u8; 8] = b"MEV1\0\0\0\0";
/// The domain of format-1 events, which predate domains.
pub const V1_DOMAIN: &str = "naming";

/// One state-machine event.
#[derive(
    Debug, Clone, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Event {
    /// The state-machine domain the event belongs to (`naming`, later `config`, `cluster`):
    /// which part of the server's state machine applies it.
    pub domain: String,
    /// The key inside the domain: for `naming` the service key, `namespace` + `"##"` +
    /// `group@@name` by the server's convention.
    pub service_key: String,
    /// What happened, e.g. `"register"`, `"deregister"`, `"update"`.
    pub kind: String,
    /// Wall-clock time of the proposal in milliseconds since the Unix epoch (display only).
    pub time_ms: u64,
    /// The server's own encoding of the change (JSON or rkyv), opaque here.
    pub body: Vec<u8>,
}

/// The format-1 event (no domain), as archived by Muster before domains.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct EventV1 {
    service_key: String,
    kind: String,
    time_ms: u64,
    body: Vec<u8>,
}

/// An event read in place from entry data, whichever format wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// See [`Event::domain`] (`"naming"` for format-1 events).
    pub domain: &'a str,
    /// See [`Event::service_key`].
    pub service_key: &'a str,
    /// See [`Event::kind`].
    pub kind: &'a str,
    /// See [`Event::time_ms`].
    pub time_ms: u64,
    /// See [`Event::body`].
    pub body: &'a [u8],
}

impl EventRef<'_> {
    /// An owned copy.
    pub fn to_event(&self) -> Event {
        Event {
            domain: self.domain.to_string(),
            service_key: self.service_key.to_string(),
            kind: self.kind.to_string(),
            time_ms: self.time_ms,
            body: self.body.to_vec(),
        }
    }
}

/// Entry data that starts with an event magic but whose archive does not validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {} event does not validate: {why}", String::from_utf8_lossy(&magic[..4]))]
pub struct EventError {
    /// The magic it claims ([`EVENT_MAGIC`] or [`EVENT_MAGIC_V1`]).
    pub magic: &'static [u8; 8],
    /// What rkyv's validation says.
    pub why: String,
}

impl Event {
    /// Encodes the event for a raft entry's `data` (format 2, [`EVENT_MAGIC`]).
    pub fn encode(&self) -> Vec<u8> {
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("in-memory serialization");
        let mut out = Vec::with_capacity(EVENT_MAGIC.len() + archive.len());
        out.extend_from_slice(EVENT_MAGIC);
        out.extend_from_slice(&archive);
        out
    }

    /// Decodes entry data of either format. `None` when the data is not an event (no
    /// `MEV1`/`MEV2` prefix: raft no-ops, conf changes), `Some(Err)` when it claims to be one
    /// but does not validate.
    pub fn decode(data: &[u8]) -> Option<Result<Event, EventError>> {
        Event::visit(data, |ev| ev.to_event())
    }

    /// Like [`Event::decode`], but validates the archive in place and hands it to `f` instead
    /// of copying it out (recovery reads a million of these). Copies only when `data` is not
    /// 8-byte aligned, which an entry's own buffer is.
    pub fn visit<R>(
        data: &[u8],
        f: impl FnOnce(EventRef<'_>) -> R,
    ) -> Option<Result<R, EventError>> {
        let (v2, rest) = if let Some(rest) = data.strip_prefix(EVENT_MAGIC.as_slice()) {
            (true, rest)
        } else {
            (false, data.strip_prefix(EVENT_MAGIC_V1.as_slice())?)
        };
        let access = |b: &[u8]| -> Result<R, EventError> {
            if v2 {
                let ev = rkyv::access::<ArchivedEvent, rkyv::rancor::Error>(b).map_err(|e| {
                    EventError {
                        magic: EVENT_MAGIC,
                        why: e.to_string(),
                    }
                })?;
                Ok(f(EventRef {
                    domain: ev.domain.as_str(),
                    service_key: ev.service_key.as_str(),
                    kind: ev.kind.as_str(),
                    time_ms: ev.time_ms.to_native(),
                    body: ev.body.as_slice(),
                }))
            } else {
                let ev = rkyv::access::<ArchivedEventV1, rkyv::rancor::Error>(b).map_err(|e| {
                    EventError {
                        magic: EVENT_MAGIC_V1,
                        why: e.to_string(),
                    }
                })?;
                Ok(f(EventRef {
                    domain: V1_DOMAIN,
                    service_key: ev.service_key.as_str(),
                    kind: ev.kind.as_str(),
                    time_ms: ev.time_ms.to_native(),
                    body: ev.body.as_slice(),
                }))
            }
        };
        if (rest.as_ptr() as usize).is_multiple_of(8) {
            return Some(access(rest));
        }
        let mut aligned = AlignedVec::<16>::with_capacity(rest.len());
        aligned.extend_from_slice(rest);
        Some(access(&aligned))
    }

    /// Encodes the event in format 1 (no domain), as Muster wrote it before domains: for tests
    /// and fixtures that check old logs still read. Only `naming` events existed then.
    pub fn encode_v1(&self) -> Vec<u8> {
        let v1 = EventV1 {
            service_key: self.service_key.clone(),
            kind: self.kind.clone(),
            time_ms: self.time_ms,
            body: self.body.clone(),
        };
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&v1).expect("in-memory serialization");
        let mut out = Vec::with_capacity(EVENT_MAGIC_V1.len() + archive.len());
        out.extend_from_slice(EVENT_MAGIC_V1);
        out.extend_from_slice(&archive);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_non_events() {
        let e = Event {
            domain: "config".into(),
            service_key: "public##DEFAULT_GROUP@@orders".into(),
            kind: "register".into(),
            time_ms: 1_700_000_000_000,
            body: br#"{"ip":"10.0.0.1","port":8080}"#.to_vec(),
        };
        assert_eq!(Event::decode(&e.encode()), Some(Ok(e.clone())));
        // In place, from an aligned buffer and from one that is not.
        let bytes = e.encode();
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        for data in [&bytes[..], &shifted[1..]] {
            let key = Event::visit(data, |ev| {
                (ev.domain.to_string(), ev.service_key.to_string())
            });
            assert_eq!(key, Some(Ok((e.domain.clone(), e.service_key.clone()))));
        }
        assert_eq!(Event::visit(b"", |_| ()), None);
        assert!(matches!(
            Event::visit(b"MEV1\0\0\0\0garbage", |_| ()),
            Some(Err(_))
        ));
        assert_eq!(Event::decode(b""), None);
        assert_eq!(Event::decode(b"{\"json\":1}"), None);
        assert!(matches!(
            Event::decode(b"MEV1\0\0\0\0garbage"),
            Some(Err(_))
        ));
        assert!(matches!(
            Event::decode(b"MEV2\0\0\0\0garbage"),
            Some(Err(_))
        ));
    }

    /// Format-1 events (before domains) still decode, as `naming` events.
    #[test]
    fn format_1_events_read_as_naming() {
        let e = Event {
            domain: "naming".into(),
            service_key: "public##DEFAULT_GROUP@@orders".into(),
            kind: "register".into(),
            time_ms: 7,
            body: vec![1, 2, 3],
        };
        let v1 = e.encode_v1();
        assert!(v1.starts_with(EVENT_MAGIC_V1));
        assert_eq!(Event::decode(&v1), Some(Ok(e.clone())));
        assert_ne!(v1, e.encode(), "format 2 is a different archive");
    }
}
