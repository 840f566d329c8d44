//! Entry points of the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and of their corpus replay
//! in `cargo test` (`tests/fuzz_corpus.rs`): one function per target, taking the raw input.
//!
//! Each function feeds the bytes to the decoder the server (or recovery) runs on untrusted
//! input: network bytes for the HTTP head, the de-chunker, parameters, beat and metadata JSON
//! and UDP acks; disk bytes for WAL records, segments and snapshot files. None of them is a
//! copy of a parser: they call the production function, and only build the input around it (a
//! body cap, split points, a valid CRC so mutations reach the payload decoder).
//!
//! Invariant for every entry: any input returns normally. A panic (including an `assert!`
//! below that checks a decoder's own contract) is a bug the fuzzer reports, and its input
//! becomes a file under `fuzz/corpus/<target>/` so the replay keeps it fixed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use muster_storage::format::{decode_frame, encode_frame, Kind, SegmentId, FORMAT_VERSION};
use muster_storage::record::{
    ConfStateRecord, EntryRecord, HardStateRecord, Record, SnapshotRecord,
};
use muster_storage::snapshot::{SNAPSHOT_HEADER_LEN, SNAPSHOT_MAGIC};
use muster_storage::wal::{scan_segment_mode, LogState, RecoveryMode, Scan};

use crate::consensus::state_machine::StateMachine;
use crate::naming::instance::{check_ip, parse_port, InstanceSpec};
use crate::naming::params::{parse_f64, parse_int, Params};
use crate::naming::service::{
    check_instance_params, check_metadata, check_namespace, check_service_name_chars,
    check_service_name_format, grouped_name, parse_metadata,
};

/// A fuzz entry: takes the raw input, returns normally or panics.
pub type Entry = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and corpus directory.
pub const TARGETS: &[(&str, Entry)] = &[
    ("http_head", http_head),
    ("dechunk", dechunk),
    ("params", params),
    ("beat", beat),
    ("metadata", metadata),
    ("udp_ack", udp_ack),
    ("wal_record", wal_record),
    ("wal_segment", wal_segment),
    ("snapshot", snapshot),
    ("listening", listening),
    ("config_import", config_import),
    ("peer", peer),
    ("raft_frame", raft_frame),
];

/// Reads fuzz-chosen numbers off the front of an input; past the end it yields zeros.
struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes.
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }
}

/// The HTTP request head parser with a fuzz-chosen header cap. A parsed head never claims more
/// bytes than it was given.
pub fn http_head(data: &[u8]) {
    let mut inp = Input { rest: data };
    let max_header = 64 + usize::from(inp.u16());
    let buf = inp.rest;
    if let Ok(Some(head)) = crate::http::parse_head(buf, max_header) {
        assert!(
            head.len() <= buf.len(),
            "head of {} > {}",
            head.len(),
            buf.len()
        );
        assert!(head.len() <= max_header, "head over the cap");
    }
}

/// The de-chunker, fed in fuzz-chosen pieces under a fuzz-chosen cap; the same bytes fed whole
/// decode to the same body (the split cannot change the result).
pub fn dechunk(data: &[u8]) {
    let mut inp = Input { rest: data };
    let limit = usize::from(inp.u16());
    let splits = usize::from(inp.u8() % 8);
    let cuts: Vec<usize> = (0..splits).map(|_| usize::from(inp.u16())).collect();
    let body = inp.rest;
    let mut pieces: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    for c in cuts {
        let end = (at + c % (body.len() + 1)).min(body.len());
        pieces.push(&body[at..end]);
        at = end;
    }
    pieces.push(&body[at..]);
    let split = crate::http::dechunk_pieces(limit, &pieces);
    let whole = crate::http::dechunk_pieces(limit, &[body]);
    match (&split, &whole) {
        (Ok((a, true)), Ok((b, true))) => assert_eq!(a, b, "split changed the body"),
        (Ok((_, true)), _) | (_, Ok((_, true))) => {
            panic!(
                "one feeding finished and the other did not: in pieces {split:?}, whole {whole:?}"
            )
        }
        (Err(_), Ok(_)) | (Ok(_), Err(_)) if pieces.len() == 1 => {
            panic!("the same bytes decoded differently: {split:?} vs {whole:?}")
        }
        _ => {}
    }
}

/// Query and form decoding, then the parameter validation a register runs (the checks of
/// `api/instance.rs:instance_spec` and `Ctx::service_key`, each the production function). The
/// first byte splits the input into query and form.
pub fn params(data: &[u8]) {
    let (cut, rest) = match data.split_first() {
        Some((&c, rest)) => (usize::from(c), rest),
        None => return,
    };
    let cut = cut.min(rest.len());
    let (query, form) = rest.split_at(cut);
    let Ok(p) = Params::parse(Some(query), (!form.is_empty()).then_some(form)) else {
        return;
    };
    for key in [
        "namespaceId",
        "serviceName",
        "ip",
        "port",
        "weight",
        "metadata",
    ] {
        if let Some(v) = p.get(key) {
            assert!(!v.contains('\0'), "NUL survived decoding in {key}");
        }
        let _ = p.required(key);
        let _ = p.optional(key);
    }
    let _ = p.int_or("pageNo", 1);
    let _ = p.lenient_bool("healthy", true);
    let _ = p.strict_bool("healthyOnly", false);
    let _ = check_namespace(p.optional("namespaceId").unwrap_or("public"));
    let grouped = grouped_name(p.get("serviceName").unwrap_or(""), p.optional("groupName"));
    let _ = check_service_name_format(&grouped);
    let _ = check_service_name_chars(&grouped);
    let cluster = p.optional("clusterName").unwrap_or("DEFAULT");
    let _ = check_instance_params(&grouped, cluster);
    if let Some(ip) = p.optional("ip") {
        let _ = check_ip(ip);
    }
    let port = p.optional("port").map(parse_port);
    let weight = p.f64_or("weight", 1.0);
    if let Some(v) = p.optional("checksum") {
        let _ = parse_int(v);
        let _ = parse_f64(v);
    }
    let metadata = p.optional("metadata").map(parse_metadata);
    if let (Some(Ok(port)), Ok(weight)) = (port, weight) {
        let spec = InstanceSpec {
            weight,
            metadata: match metadata {
                Some(Ok(m)) => m,
                _ => Default::default(),
            },
            ..InstanceSpec::new(p.optional("ip").unwrap_or(""), port)
        };
        let _ = spec.validate();
    }
}

/// The beat parameter's JSON (`api/instance.rs:parse_beat`).
pub fn beat(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::api::instance::parse_beat(s);
    }
}

/// Metadata as JSON or `k=v,k=v`; what parses passes `check_metadata` or is refused by it,
/// never a panic.
pub fn metadata(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(m) = parse_metadata(s) {
            let _ = check_metadata(&m);
        }
    }
}

/// A push ack datagram, parsed alone; handled by a push table with no subscribers (junk from
/// anyone is ignored), then by one with two targets on one port and a round waiting for their
/// acks: from the first target it acks exactly when it names that round, and only once.
pub fn udp_ack(data: &[u8]) {
    use crate::naming::push::{parse_ack, Push, PushConfig, Subscription};
    let parsed = parse_ack(data);
    let mut push = Push::new(PushConfig::default(), 0);
    let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
    assert!(!push.ack(from, data), "an ack matched no push yet counted");
    let key = crate::naming::service::ServiceKey::new("public", "DEFAULT_GROUP@@fuzz");
    for last in [1, 2] {
        let sub = Subscription {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 9),
            clusters: String::new(),
            agent: "Nacos-Java-Client:v1.4.6".into(),
            grouped: true,
            app: String::new(),
        };
        assert!(push.subscribe(&key, sub, 0));
    }
    let out = push.prepare(&key, None, 0, 1);
    let packet: serde_json::Value =
        serde_json::from_slice(&out[0].packet).expect("a small packet is plain JSON");
    let ref_time = packet["lastRefTime"].as_u64().expect("lastRefTime");
    let acked = push.ack(from, data);
    assert_eq!(
        acked,
        parsed == Some(ref_time),
        "ack {parsed:?} of round {ref_time}"
    );
    assert!(!(acked && push.ack(from, data)), "a duplicate ack matched");
}

/// One WAL record frame: the raw bytes as they are (frame checks, CRC), and the bytes as the
/// payload of a correctly framed record of a fuzz-chosen kind (the rkyv payload decoder behind
/// the CRC), then the entry's event and persistent op as the server decodes them.
pub fn wal_record(data: &[u8]) {
    let mut inp = Input { rest: data };
    let seq = u64::from(inp.u8());
    let kind = Kind::ALL[usize::from(inp.u8() % 4)];
    let rest = inp.rest;
    if let Ok(Some(f)) = decode_frame(seq, rest) {
        assert!(f.size <= rest.len());
        let _ = Record::decode_payload(f.kind, f.payload);
    }
    if rest.is_empty() {
        return;
    }
    let mut framed = Vec::new();
    encode_frame(seq, kind, rest, &mut framed);
    let f = decode_frame(seq, &framed)
        .expect("a frame just encoded decodes")
        .expect("not empty");
    assert_eq!(f.payload, rest);
    if let Ok(Record::Entry(e)) = Record::decode_payload(f.kind, f.payload) {
        entry_data(&e.data);
    }
    entry_data(rest);
}

/// What the server does with an entry's data: the event envelope, then its body.
fn entry_data(data: &[u8]) {
    if let Some(Ok(ev)) = muster_storage::event::Event::decode(data) {
        let _ = crate::naming::op::PersistentOp::decode_body(&ev.body);
    }
}

/// A whole segment, scanned in both recovery modes as the last and as a sealed segment, then
/// replayed. The first byte picks the shape: raw bytes behind a valid header, or a log of
/// fuzz-described records (entries, hard states, conf states and snapshot markers with small
/// numbers, so gaps, overlaps and regressions are common) with valid CRCs and an optional byte
/// flipped.
pub fn wal_segment(data: &[u8]) {
    let mut inp = Input { rest: data };
    let shape = inp.u8();
    let id = SegmentId {
        seq: 1,
        first_index: u64::from(inp.u8() % 4),
    };
    let mut seg = id.encode_header().to_vec();
    if shape & 1 == 0 {
        seg.extend_from_slice(inp.rest);
    } else {
        // At most 64 records: bounded whatever the input.
        for _ in 0..64 {
            if inp.rest.len() < 4 {
                break;
            }
            let rec = record(&mut inp);
            rec.encode(id.seq, &mut seg).expect("small record");
        }
        let flip = usize::from(inp.u16());
        let mask = inp.u8();
        if mask != 0 && !seg.is_empty() {
            let at = flip % seg.len();
            seg[at] ^= mask;
        }
        // Preallocated space after the data, as a real segment has.
        seg.resize(seg.len() + usize::from(shape >> 4) * 64, 0);
    }
    let path = Path::new("fuzz/0000000000000001.wal");
    for mode in [RecoveryMode::Strict, RecoveryMode::TruncateTail] {
        for is_last in [true, false] {
            let (scanned, err) = scan_segment_mode(path, id, &seg, is_last, mode);
            assert!(scanned.end <= seg.len() as u64, "end past the file");
            if err.is_none() {
                let scan = Scan {
                    segments: vec![scanned],
                    snapshots: Vec::new(),
                };
                let _ = LogState::replay(&scan);
            }
        }
    }
}

/// A record described by the input, with small numbers.
fn record(inp: &mut Input<'_>) -> Record {
    let tag = inp.u8();
    let small = |inp: &mut Input<'_>| u64::from(inp.u8() % 16);
    let ids = |inp: &mut Input<'_>| -> Vec<u64> {
        let n = usize::from(inp.u8() % 4);
        (0..n).map(|_| u64::from(inp.u8() % 4)).collect()
    };
    match tag % 4 {
        0 => Record::Entry(EntryRecord {
            index: small(inp),
            term: small(inp),
            entry_type: inp.u8() % 4,
            data: {
                let n = usize::from(inp.u8() % 32);
                inp.take(n).to_vec()
            },
            context: Vec::new(),
        }),
        1 => Record::HardState(HardStateRecord {
            term: small(inp),
            vote: small(inp),
            commit: small(inp),
        }),
        2 => Record::ConfState(ConfStateRecord {
            voters: ids(inp),
            learners: ids(inp),
            ..ConfStateRecord::default()
        }),
        _ => Record::Snapshot(SnapshotRecord {
            index: small(inp),
            term: small(inp),
            conf_state: ConfStateRecord {
                voters: ids(inp),
                ..ConfStateRecord::default()
            },
            discard_log: tag & 0x80 != 0,
        }),
    }
}

/// A snapshot file: the raw bytes as a file; the bytes as the payload of a file with a valid
/// header and CRC (the rkyv decoder behind it); and the bytes as a state-machine image, which,
/// when it decodes, encodes to an image that decodes to the same state.
pub fn snapshot(data: &[u8]) {
    let path = Path::new("fuzz/0000000000000001-0000000000000001.snap");
    let mut inp = Input { rest: data };
    let index = u64::from(inp.u8());
    let payload = inp.rest;
    if let Ok(s) = muster_storage::snapshot::decode(path, index, payload) {
        assert_eq!(s.index, index);
        image(&s.data);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    let mut file = Vec::with_capacity(SNAPSHOT_HEADER_LEN + payload.len());
    file.extend_from_slice(SNAPSHOT_MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(&[0; 4]);
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    file.extend_from_slice(&h.finalize().to_le_bytes());
    file.extend_from_slice(&[0; 4]);
    file.extend_from_slice(payload);
    if let Ok(s) = muster_storage::snapshot::decode(path, index, &file) {
        image(&s.data);
    }
    image(payload);
}

/// A state-machine image: decode, and if it decodes, its re-encoding decodes to an equal state.
/// (Bytes and even lengths are not compared: services and instances are written in hash-map
/// order, and the archive's padding depends on that order. A state holding a NaN, which a
/// crafted image can carry, is never equal to itself, so it is compared by its record count.)
fn image(bytes: &[u8]) {
    if let Ok(sm) = StateMachine::decode(bytes) {
        let again = sm.encode();
        let back = StateMachine::decode(&again).expect("an encoded image decodes");
        assert_eq!(
            back.records(),
            sm.records(),
            "round trip changed the records"
        );
        assert_eq!(back.naming.service_count(), sm.naming.service_count());
        if !format!("{:?}", sm.naming).contains("NaN") {
            assert!(back == sm, "round trip changed the state");
        }
    }
}

/// A `Listening-Configs` value (`POST /nacos/v1/cs/configs/listener`), as the form decoder
/// hands it over: `config::listen::parse_listening` (the second URL decode, then the lines and
/// fields). What parses is at most `MAX_KEYS` distinct keys, and written back the way a client
/// writes it (fields, lines, `URLEncoder.encode`) it parses to the same list; any string
/// survives `URLEncoder.encode` then the second decode unchanged. The first two bytes are a
/// `Long-Pulling-Timeout`, whose hold stays within its bounds.
pub fn listening(data: &[u8]) {
    use crate::config::listen::{
        hold_ms, java_url_encode, parse_listening, url_decode_again, MAX_HOLD_MS, MAX_KEYS,
        MIN_HOLD_MS,
    };
    let mut inp = Input { rest: data };
    let timeout = i64::from(inp.u16() as i16) * 1000;
    assert!((MIN_HOLD_MS..=MAX_HOLD_MS).contains(&hold_ms(timeout)));
    let Ok(value) = std::str::from_utf8(inp.rest) else {
        return;
    };
    assert_eq!(
        url_decode_again(&java_url_encode(value)).as_deref(),
        Ok(value),
        "encode then decode changed the value"
    );
    let Ok(list) = parse_listening(value) else {
        return;
    };
    assert!(list.len() <= MAX_KEYS, "{} keys", list.len());
    let mut raw = String::new();
    for l in &list {
        for field in [&l.data_id, &l.group, &l.md5] {
            raw.push_str(field);
            raw.push('\x02');
        }
        if l.tenant.is_empty() {
            raw.pop();
        } else {
            raw.push_str(&l.tenant);
        }
        raw.push('\x01');
    }
    if list.is_empty() {
        return;
    }
    let again = parse_listening(&java_url_encode(&raw)).expect("a written-back list parses");
    assert_eq!(again, list, "written back, the list parsed differently");
}

/// A config import upload (`POST /nacos/v1/cs/configs?import=true`): the first byte picks the
/// bytes as the zip itself, or as a `multipart/form-data` body whose `file` part is the zip
/// (`api/transfer.rs`: the multipart reader, then the zip reader). Whatever the zip holds, the
/// reader refuses it or returns at most `MAX_ENTRIES` configs, none named absolute or with a
/// `..` component, each `group/dataId` with no further `/`; each then meets the key check.
pub fn config_import(data: &[u8]) {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let zip = if shape & 1 == 0 {
        rest
    } else {
        match crate::api::transfer::multipart_part(rest, "multipart/form-data; boundary=XX", "file")
        {
            Some(part) => part,
            None => return,
        }
    };
    if let Ok((entries, _, _)) = crate::api::transfer::unzip(zip) {
        assert!(entries.len() <= crate::api::transfer::MAX_ENTRIES);
        for e in &entries {
            for part in [&e.group, &e.data_id] {
                assert!(
                    !part.contains('/') && !part.split('\\').any(|c| c == ".."),
                    "entry {}/{}",
                    e.group,
                    e.data_id
                );
            }
            let _ = crate::config::params::check_key(&e.data_id, &e.group);
        }
    }
}

/// Bytes from a peer: the first byte picks the peer link's frames (length, kind, body; a
/// hello's fields) as `node/peer.rs` reads them off a connection, or a frame body as the JSON
/// of a Distro request and of the answers a requester decodes (`node/distro.rs`). Every frame
/// read consumed at least its 5-byte header.
pub fn peer(data: &[u8]) {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    if shape & 1 == 0 {
        let frames = crate::node::peer::decode_frames_for_fuzz(rest);
        assert!(
            frames * 5 <= rest.len(),
            "{frames} frames from {} bytes",
            rest.len()
        );
    } else {
        let _ = crate::node::distro::decode_for_fuzz(rest);
    }
}

/// Bytes from a peer as `RAFT` frame bodies (`node/transport.rs`): batches of protobuf raft
/// messages and checksummed snapshot chunks. The input is a sequence of frames, each a length
/// (u16 LE) then that many bytes (the last frame takes what is left if the input is shorter),
/// fed in order to one `Receiver`, so chunk assembly across frames is fuzzed too.
pub fn raft_frame(data: &[u8]) {
    let mut inp = Input { rest: data };
    let mut frames = Vec::new();
    while !inp.rest.is_empty() && frames.len() < 64 {
        let len = usize::from(inp.u16());
        frames.push(inp.take(len));
    }
    let delivered = crate::node::transport::decode_for_fuzz(&frames);
    assert!(
        delivered <= frames.len() * crate::node::transport::MAX_BATCH,
        "{delivered} messages from {} frames",
        frames.len()
    );
}
