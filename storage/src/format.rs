//! Framing: segment names and headers, the 8-byte aligned record frame and its salted CRC
//! (FORMAT.md §1–§3). Pure functions over byte slices; no IO.

use std::fmt;

/// Segment header magic (FORMAT.md §2).
pub const SEGMENT_MAGIC: &[u8; 8] = b"MUSTRWAL";
/// On-disk format version written by this crate (segment and snapshot headers). Version 2
/// added state-machine domains (events `MEV2`, FORMAT.md §8); its framing is version 1's, so
/// both are read, while a binary that knows only version 1 refuses a version-2 directory instead
/// of skipping its events.
pub const FORMAT_VERSION: u32 = 2;
/// Oldest format version still read.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Size of the segment header in bytes; the first record starts here.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Size of a record header in bytes.
pub const RECORD_HEADER_LEN: usize = 16;
/// Largest payload a record may carry, in bytes (64 MiB).
pub const MAX_PAYLOAD: u32 = 64 << 20;
/// Sector size used by the torn-write rule (FORMAT.md §6).
pub const SECTOR: usize = 512;

/// Record kinds (FORMAT.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// A raft log entry.
    Entry = 1,
    /// Raft hard state (term, vote, commit).
    HardState = 2,
    /// Raft conf state (voters, learners).
    ConfState = 3,
    /// A snapshot became durable; entries at or below its index are compacted.
    Snapshot = 4,
}

impl Kind {
    /// All kinds, in code order.
    pub const ALL: [Kind; 4] = [
        Kind::Entry,
        Kind::HardState,
        Kind::ConfState,
        Kind::Snapshot,
    ];

    /// Lower-case name used by `muster-wal`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Entry => "entry",
            Kind::HardState => "hardstate",
            Kind::ConfState => "confstate",
            Kind::Snapshot => "snapshot",
        }
    }
}

impl TryFrom<u8> for Kind {
    type Error = FrameError;
    fn try_from(v: u8) -> Result<Self, FrameError> {
        match v {
            1 => Ok(Kind::Entry),
            2 => Ok(Kind::HardState),
            3 => Ok(Kind::ConfState),
            4 => Ok(Kind::Snapshot),
            other => Err(FrameError::UnknownKind(other)),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a record frame does not decode. The variants are checked in the order given in
/// FORMAT.md §3, so a given damage always reports the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer than 16 bytes remain, not all zero.
    #[error("record header cut short: {have} of 16 bytes")]
    ShortHeader {
        /// Bytes available.
        have: usize,
    },
    /// A reserved header byte is not zero.
    #[error("non-zero reserved header byte at +{at}")]
    NonZeroReserved {
        /// Offset of the first non-zero reserved byte, relative to the record start.
        at: usize,
    },
    /// The kind byte is not a known kind.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// `len` is zero or above [`MAX_PAYLOAD`].
    #[error("bad payload length {0}")]
    BadLength(u32),
    /// The frame extends past the available bytes.
    #[error("record cut short: {have} of {need} bytes")]
    ShortPayload {
        /// Frame size in bytes (header, payload, padding).
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The CRC does not match.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the bytes read.
        computed: u32,
    },
    /// A padding byte is not zero.
    #[error("non-zero padding byte at +{at}")]
    NonZeroPadding {
        /// Offset of the first bad byte, relative to the record start.
        at: usize,
    },
    /// The CRC matched but the payload is not a valid archive of its kind.
    #[error("payload does not decode: {0}")]
    Payload(String),
}

/// True when every byte of `b` is zero. Compares eight bytes at a time: recovery checks the
/// unwritten rest of a preallocated segment (tens of MiB), and must stay fast in debug builds.
pub fn is_zero(b: &[u8]) -> bool {
    // SAFETY: any bit pattern is a valid u64; align_to only reinterprets the aligned middle.
    let (head, words, tail) = unsafe { b.align_to::<u64>() };
    head.iter().all(|&x| x == 0) && tail.iter().all(|&x| x == 0) && words.iter().all(|&w| w == 0)
}

/// Rounds `n` up to a multiple of 8.
pub const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Size on disk of a record with a `payload_len`-byte payload.
pub const fn frame_len(payload_len: usize) -> usize {
    align8(RECORD_HEADER_LEN + payload_len)
}

/// The salted record CRC: `crc32(seq_le8 ‖ len_le4 ‖ kind ‖ payload)` (FORMAT.md §3).
pub fn record_crc(seq: u64, kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

/// Appends one framed record to `out`.
///
/// # Panics
/// If `payload` is empty or longer than [`MAX_PAYLOAD`]: callers check this first (the encoders in
/// `record` never produce such payloads).
pub fn encode_frame(seq: u64, kind: Kind, payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        !payload.is_empty() && payload.len() <= MAX_PAYLOAD as usize,
        "payload length {} out of range",
        payload.len()
    );
    let start = out.len();
    let crc = record_crc(seq, kind as u8, payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
    out.resize(start + frame_len(payload.len()), 0);
}

/// A decoded frame borrowing its payload from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The record kind.
    pub kind: Kind,
    /// The payload bytes (not yet validated as an archive).
    pub payload: &'a [u8],
    /// Total bytes the frame occupies (header + payload + padding).
    pub size: usize,
}

/// Decodes the frame at the start of `buf`, in the check order of FORMAT.md §3.
///
/// Returns `Ok(None)` at end of data: `buf` is empty or starts with 16 zero bytes.
pub fn decode_frame(seq: u64, buf: &[u8]) -> Result<Option<Frame<'_>>, FrameError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.len() < RECORD_HEADER_LEN {
        if buf.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        return Err(FrameError::ShortHeader { have: buf.len() });
    }
    let hdr = &buf[..RECORD_HEADER_LEN];
    if hdr.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    for at in (5..8).chain(12..16) {
        if hdr[at] != 0 {
            return Err(FrameError::NonZeroReserved { at });
        }
    }
    let kind = Kind::try_from(hdr[4])?;
    let len = u32::from_le_bytes(hdr[0..4].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_PAYLOAD {
        return Err(FrameError::BadLength(len));
    }
    let size = frame_len(len as usize);
    if buf.len() < size {
        return Err(FrameError::ShortPayload {
            need: size,
            have: buf.len(),
        });
    }
    let stored = u32::from_le_bytes(hdr[8..12].try_into().expect("4 bytes"));
    let end = RECORD_HEADER_LEN + len as usize;
    let payload = &buf[RECORD_HEADER_LEN..end];
    let computed = record_crc(seq, kind as u8, payload);
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    if let Some(p) = buf[end..size].iter().position(|&b| b != 0) {
        return Err(FrameError::NonZeroPadding { at: end + p });
    }
    Ok(Some(Frame {
        kind,
        payload,
        size,
    }))
}

/// etcd's torn-write rule (FORMAT.md §6), applied to the record that failed to decode at
/// `offset` in the last segment `file`: torn when the file ends inside the record, or when any
/// 512-byte sector chunk of the record's extent is all zeros. Chunks are aligned to file
/// offsets; the first and last chunk may be partial.
pub fn is_torn(file: &[u8], offset: usize, err: &FrameError) -> bool {
    let extent_end = match err {
        FrameError::ShortHeader { .. } | FrameError::ShortPayload { .. } => return true,
        FrameError::Checksum { .. }
        | FrameError::NonZeroPadding { .. }
        | FrameError::Payload(_) => {
            let len = u32::from_le_bytes(file[offset..offset + 4].try_into().expect("4 bytes"));
            offset + frame_len(len as usize)
        }
        // The 8-byte header word is never torn (it is aligned), so damage here is corruption.
        FrameError::NonZeroReserved { .. }
        | FrameError::UnknownKind(_)
        | FrameError::BadLength(_) => return false,
    };
    let end = extent_end.min(file.len());
    let mut start = offset;
    while start < end {
        let chunk_end = ((start / SECTOR) + 1) * SECTOR;
        let chunk_end = chunk_end.min(end);
        if file[start..chunk_end].iter().all(|&b| b == 0) {
            return true;
        }
        start = chunk_end;
    }
    false
}

/// Identity of a segment, from its name and header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId {
    /// Sequence number, starting at 1, consecutive.
    pub seq: u64,
    /// Raft index expected next when the segment was created.
    pub first_index: u64,
}

impl SegmentId {
    /// The file name, `{seq:016x}-{first_index:016x}.wal`.
    pub fn file_name(&self) -> String {
        format!("{:016x}-{:016x}.wal", self.seq, self.first_index)
    }

    /// Parses a segment file name; `None` for anything else (including `.tmp` and `.broken`).
    pub fn parse(name: &str) -> Option<SegmentId> {
        let (seq, first_index) = parse_pair(name.strip_suffix(".wal")?)?;
        Some(SegmentId { seq, first_index })
    }

    /// Encodes the 64-byte segment header.
    pub fn encode_header(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[0..8].copy_from_slice(SEGMENT_MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[16..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.first_index.to_le_bytes());
        let crc = crc32fast::hash(&h[0..32]);
        h[32..36].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Checks that `buf` starts with this segment's valid header. The error names what differs.
    pub fn check_header(&self, buf: &[u8]) -> Result<(), HeaderError> {
        if buf.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderError::Short { len: buf.len() });
        }
        let h = &buf[..SEGMENT_HEADER_LEN];
        if &h[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Magic(h[0..8].try_into().expect("8 bytes")));
        }
        let crc = u32::from_le_bytes(h[32..36].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&h[0..32]) {
            return Err(HeaderError::Crc);
        }
        let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(HeaderError::Version(version));
        }
        let seq = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
        let first = u64::from_le_bytes(h[24..32].try_into().expect("8 bytes"));
        if seq != self.seq || first != self.first_index {
            return Err(HeaderError::Name {
                seq,
                first,
                named: *self,
            });
        }
        if h[12..16].iter().chain(&h[36..]).any(|&b| b != 0) {
            return Err(HeaderError::Reserved);
        }
        Ok(())
    }
}

/// Why a segment header is not valid (see [`SegmentId::check_header`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The file is shorter than the header.
    #[error("file is {len} bytes, shorter than the {SEGMENT_HEADER_LEN}-byte header")]
    Short {
        /// The file's length.
        len: usize,
    },
    /// The first 8 bytes are not [`SEGMENT_MAGIC`].
    #[error("bad magic {:?}", String::from_utf8_lossy(.0))]
    Magic([u8; 8]),
    /// The header's CRC does not match its first 32 bytes.
    #[error("header crc mismatch")]
    Crc,
    /// A format version this build does not read.
    #[error(
        "unsupported version {0} (this build reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})"
    )]
    Version(u32),
    /// The header names another segment than the file name.
    #[error("header says seq {seq} first_index {first}, file name says {} {}", named.seq, named.first_index)]
    Name {
        /// The header's sequence number.
        seq: u64,
        /// The header's first index.
        first: u64,
        /// What the file name says.
        named: SegmentId,
    },
    /// Reserved bytes are not zero.
    #[error("non-zero reserved header bytes")]
    Reserved,
}

/// Parses `{a:016x}-{b:016x}`.
pub(crate) fn parse_pair(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(seq: u64, kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(seq, kind, payload, &mut v);
        v
    }

    #[test]
    fn is_zero_sees_a_byte_anywhere() {
        let buf = [0u8; 100];
        for start in 0..9 {
            for len in 0..(100 - start) {
                assert!(is_zero(&buf[start..start + len]));
            }
        }
        for at in 0..100 {
            let mut b = [0u8; 100];
            b[at] = 1;
            for start in 0..9.min(at + 1) {
                assert!(!is_zero(&b[start..]), "byte {at} from {start}");
            }
        }
    }

    #[test]
    fn frame_is_aligned_and_round_trips() {
        for n in 1..40 {
            let payload: Vec<u8> = (0..n as u8).map(|b| b.wrapping_mul(7) | 1).collect();
            let buf = one(3, Kind::Entry, &payload);
            assert_eq!(buf.len() % 8, 0);
            let f = decode_frame(3, &buf).unwrap().unwrap();
            assert_eq!(
                (f.kind, f.payload, f.size),
                (Kind::Entry, &payload[..], buf.len())
            );
        }
    }

    #[test]
    fn end_of_data_is_zeros_or_empty() {
        assert_eq!(decode_frame(1, &[]), Ok(None));
        assert_eq!(decode_frame(1, &[0; 16]), Ok(None));
        assert_eq!(decode_frame(1, &[0; 5]), Ok(None));
    }

    /// The salt: the same bytes in a segment with another sequence never validate.
    #[test]
    fn crc_is_salted_with_segment_seq() {
        let buf = one(7, Kind::HardState, b"abcdefgh");
        assert!(matches!(
            decode_frame(8, &buf),
            Err(FrameError::Checksum { .. })
        ));
    }

    /// Truncation table: every proper prefix of a record reports the exact error.
    #[test]
    fn truncation_table_every_prefix() {
        let payload: Vec<u8> = (1..=21).collect(); // frame = align8(16+21) = 40
        let buf = one(5, Kind::Entry, &payload);
        assert_eq!(buf.len(), 40);
        for cut in 0..buf.len() {
            let got = decode_frame(5, &buf[..cut]);
            let want = match cut {
                0 => Ok(None),
                1..=15 => Err(FrameError::ShortHeader { have: cut }),
                _ => Err(FrameError::ShortPayload {
                    need: 40,
                    have: cut,
                }),
            };
            assert_eq!(got, want, "prefix of {cut} bytes");
        }
        assert!(decode_frame(5, &buf).unwrap().is_some());
    }

    /// Bit-flip table: flipping the top bit of every byte reports the exact error for the field
    /// the byte belongs to.
    #[test]
    fn bit_flip_table_every_byte() {
        let payload: Vec<u8> = (1..=21).collect();
        let good = one(5, Kind::Entry, &payload);
        let stored_crc = u32::from_le_bytes(good[8..12].try_into().unwrap());
        for i in 0..good.len() {
            let mut buf = good.clone();
            buf[i] ^= 0x80;
            let got = decode_frame(5, &buf);
            let want = match i {
                0..=3 => {
                    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap());
                    if len > MAX_PAYLOAD {
                        Err(FrameError::BadLength(len))
                    } else {
                        Err(FrameError::ShortPayload {
                            need: frame_len(len as usize),
                            have: 40,
                        })
                    }
                }
                4 => Err(FrameError::UnknownKind(0x81)),
                5..=7 | 12..=15 => Err(FrameError::NonZeroReserved { at: i }),
                8..=11 => Err(FrameError::Checksum {
                    stored: u32::from_le_bytes(buf[8..12].try_into().unwrap()),
                    computed: stored_crc,
                }),
                16..=36 => Err(FrameError::Checksum {
                    stored: stored_crc,
                    computed: record_crc(5, 1, &buf[16..37]),
                }),
                _ => Err(FrameError::NonZeroPadding { at: i }),
            };
            assert_eq!(got, want, "flipped byte {i}");
        }
    }

    #[test]
    fn torn_rule_needs_a_zero_sector() {
        // A record spanning two sectors whose second half is zero is torn; a single-byte
        // flip with no zero sector is not.
        let payload = vec![0xAB; 1000];
        let mut file = vec![0u8; 64];
        encode_frame(1, Kind::Entry, &payload, &mut file);
        let mut torn = file.clone();
        torn[512..].fill(0);
        let err = decode_frame(1, &torn[64..]).unwrap_err();
        assert!(is_torn(&torn, 64, &err));
        let mut flipped = file.clone();
        flipped[700] ^= 1;
        let err = decode_frame(1, &flipped[64..]).unwrap_err();
        assert!(!is_torn(&flipped, 64, &err));
    }

    #[test]
    fn segment_header_round_trip_and_names() {
        let id = SegmentId {
            seq: 2,
            first_index: 0x3e9,
        };
        assert_eq!(id.file_name(), "0000000000000002-00000000000003e9.wal");
        assert_eq!(SegmentId::parse(&id.file_name()), Some(id));
        assert_eq!(
            SegmentId::parse("0000000000000002-00000000000003e9.wal.tmp"),
            None
        );
        let h = id.encode_header();
        assert_eq!(id.check_header(&h), Ok(()));
        let other = SegmentId { seq: 3, ..id };
        assert!(matches!(
            other.check_header(&h),
            Err(HeaderError::Name { seq: 2, .. })
        ));
        for i in 0..SEGMENT_HEADER_LEN {
            let mut b = h;
            b[i] ^= 1;
            assert!(id.check_header(&b).is_err(), "flip at {i}");
        }
    }
}
