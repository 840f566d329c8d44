//! The event envelope (FORMAT.md §8) the server puts in raft entry `data`, so `muster-wal` can
//! filter by service and show a service's history without knowing the server's types.

use rkyv::util::AlignedVec;

/// Prefix of encoded events: `"MEV1"` and 4 zero bytes (keeps the archive 8-aligned).
pub const EVENT_MAGIC: &[u8; 8] = b"MEV1\0\0\0\0";

/// One state-machine event.
#[derive(
    Debug, Clone, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Event {
    /// The service key, `namespace` + `"##"` + `group@@name` by the server's convention.
    pub service_key: String,
    /// What happened, e.g. `"register"`, `"deregister"`, `"update"`.
    pub kind: String,
    /// Wall-clock time of the proposal in milliseconds since the Unix epoch (display only).
    pub time_ms: u64,
    /// The server's own encoding of the change (JSON or rkyv), opaque here.
    pub body: Vec<u8>,
}

impl Event {
    /// Encodes the event for a raft entry's `data`.
    pub fn encode(&self) -> Vec<u8> {
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("in-memory serialization");
        let mut out = Vec::with_capacity(EVENT_MAGIC.len() + archive.len());
        out.extend_from_slice(EVENT_MAGIC);
        out.extend_from_slice(&archive);
        out
    }

    /// Decodes entry data. `None` when the data is not an event (no `MEV1` prefix: raft no-ops,
    /// conf changes), `Some(Err)` when it claims to be one but does not validate.
    pub fn decode(data: &[u8]) -> Option<Result<Event, String>> {
        Event::visit(data, |ev| {
            rkyv::deserialize::<Event, rkyv::rancor::Error>(ev).map_err(|e| e.to_string())
        })
        .map(|r| r.and_then(|ev| ev))
    }

    /// Like [`Event::decode`], but validates the archive in place and hands it to `f` instead
    /// of copying it out (recovery reads a million of these). Copies only when `data` is not
    /// 8-byte aligned, which an entry's own buffer is.
    pub fn visit<R>(data: &[u8], f: impl FnOnce(&ArchivedEvent) -> R) -> Option<Result<R, String>> {
        let rest = data.strip_prefix(EVENT_MAGIC.as_slice())?;
        let access = |b: &[u8]| {
            rkyv::access::<ArchivedEvent, rkyv::rancor::Error>(b)
                .map(f)
                .map_err(|e| e.to_string())
        };
        if (rest.as_ptr() as usize).is_multiple_of(8) {
            return Some(access(rest));
        }
        let mut aligned = AlignedVec::<16>::with_capacity(rest.len());
        aligned.extend_from_slice(rest);
        Some(access(&aligned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_non_events() {
        let e = Event {
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
            let key = Event::visit(data, |ev| ev.service_key.as_str().to_string());
            assert_eq!(key, Some(Ok(e.service_key.clone())));
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
    }
}
