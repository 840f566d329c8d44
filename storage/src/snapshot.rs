//! Snapshot files (FORMAT.md §7): `{term:016x}-{index:016x}.snap`, written atomically
//! (tmp → fsync → rename → fsync dir) and validated in full before use.

use std::path::{Path, PathBuf};

use crate::error::{Corruption, Error, Result};
use crate::failpoint;
use crate::format::parse_pair;
use crate::fs::FileSystem;
use crate::record::{from_bytes, ConfStateRecord};

/// Snapshot file magic.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"MUSTSNAP";
/// Snapshot file header length in bytes.
pub const SNAPSHOT_HEADER_LEN: usize = 32;

/// A snapshot's content: the state machine image at `index` plus raft metadata.
#[derive(
    Debug, Clone, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct SnapshotData {
    /// Index of the last entry the image includes.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Membership at `index`.
    pub conf_state: ConfStateRecord,
    /// The state machine image, opaque to storage.
    pub data: Vec<u8>,
}

/// The name of the snapshot file for `(term, index)`.
pub fn file_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}.snap")
}

/// Parses a snapshot file name into `(term, index)`.
pub fn parse_name(name: &str) -> Option<(u64, u64)> {
    parse_pair(name.strip_suffix(".snap")?)
}

/// Encodes a whole snapshot file.
pub fn encode(snap: &SnapshotData) -> Vec<u8> {
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(snap).expect("in-memory serialization");
    let mut h = crc32fast::Hasher::new();
    h.update(&snap.index.to_le_bytes());
    h.update(&payload);
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + payload.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&crate::format::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&payload);
    out
}

/// Decodes and validates a snapshot file whose name says `index`. Errors are
/// [`Corruption::Snapshot`] with the offset of the bad part (0 header, 32 payload).
pub fn decode(path: &Path, index: u64, bytes: &[u8]) -> Result<SnapshotData> {
    let bad = |offset: u64, why: String| Error::corrupt(path, offset, Corruption::Snapshot(why));
    if bytes.len() < SNAPSHOT_HEADER_LEN {
        return Err(bad(
            0,
            format!("file is {} bytes, header needs 32", bytes.len()),
        ));
    }
    if &bytes[0..8] != SNAPSHOT_MAGIC {
        return Err(bad(0, "bad magic".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4"));
    if !(crate::format::OLDEST_FORMAT_VERSION..=crate::format::FORMAT_VERSION).contains(&version) {
        return Err(bad(0, format!("unsupported version {version}")));
    }
    if bytes[12..16].iter().chain(&bytes[28..32]).any(|&b| b != 0) {
        return Err(bad(0, "non-zero reserved header bytes".into()));
    }
    let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8"));
    let have = (bytes.len() - SNAPSHOT_HEADER_LEN) as u64;
    if len != have {
        return Err(bad(
            16,
            format!("header says {len} payload bytes, file has {have}"),
        ));
    }
    let stored = u32::from_le_bytes(bytes[24..28].try_into().expect("4"));
    let payload = &bytes[SNAPSHOT_HEADER_LEN..];
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    let computed = h.finalize();
    if stored != computed {
        return Err(bad(
            SNAPSHOT_HEADER_LEN as u64,
            format!("crc mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    let snap: SnapshotData =
        from_bytes(payload).map_err(|e| bad(SNAPSHOT_HEADER_LEN as u64, e.to_string()))?;
    if snap.index != index {
        return Err(bad(
            SNAPSHOT_HEADER_LEN as u64,
            format!("payload is for index {}, name says {index}", snap.index),
        ));
    }
    Ok(snap)
}

/// Writes `snap` into `dir` atomically and returns its path. On return the file and its
/// directory entry are durable.
pub fn write(fs: &dyn FileSystem, dir: &Path, snap: &SnapshotData) -> Result<PathBuf> {
    let path = dir.join(file_name(snap.term, snap.index));
    let tmp = dir.join(format!("{}.tmp", file_name(snap.term, snap.index)));
    let bytes = encode(snap);
    fs.write_synced(&tmp, &bytes)
        .map_err(|e| Error::io("write snapshot", &tmp, e))?;
    failpoint::hit(failpoint::SNAPSHOT_BEFORE_RENAME)
        .map_err(|e| Error::io("rename snapshot", &tmp, e))?;
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename snapshot", &tmp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))?;
    failpoint::hit(failpoint::SNAPSHOT_AFTER_RENAME)
        .map_err(|e| Error::io("snapshot marker", &path, e))?;
    Ok(path)
}

/// Reads and validates the snapshot `(term, index)` in `dir`.
pub fn read(fs: &dyn FileSystem, dir: &Path, term: u64, index: u64) -> Result<SnapshotData> {
    let path = dir.join(file_name(term, index));
    let bytes = match fs.read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::corrupt(
                &path,
                0,
                Corruption::Snapshot("named by the log but missing".into()),
            ))
        }
        Err(e) => return Err(Error::io("read snapshot", &path, e)),
    };
    decode(&path, index, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotData {
        SnapshotData {
            index: 42,
            term: 3,
            conf_state: ConfStateRecord {
                voters: vec![1],
                ..Default::default()
            },
            data: b"state machine image".to_vec(),
        }
    }

    #[test]
    fn round_trip_and_every_byte_flip_is_refused() {
        let s = sample();
        let bytes = encode(&s);
        let p = Path::new("x.snap");
        assert_eq!(decode(p, 42, &bytes).unwrap(), s);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let err = decode(p, 42, &b).unwrap_err();
            assert!(err.is_corruption(), "byte {i}: {err}");
        }
        for cut in 0..bytes.len() {
            assert!(decode(p, 42, &bytes[..cut]).is_err(), "cut {cut}");
        }
        assert!(decode(p, 43, &bytes).is_err(), "index salt");
    }

    #[test]
    fn names() {
        assert_eq!(
            file_name(7, 0x3e8),
            "0000000000000007-00000000000003e8.snap"
        );
        assert_eq!(parse_name(&file_name(7, 0x3e8)), Some((7, 0x3e8)));
        assert_eq!(
            parse_name("0000000000000007-00000000000003e8.snap.tmp"),
            None
        );
    }
}
