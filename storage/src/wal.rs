//! The write-ahead log: segments on disk (FORMAT.md §5–§6) and the replayed raft state.
//!
//! Calling order for a writer: [`Wal::open`] (recovers and repairs a torn tail) → any number of
//! [`Wal::append`] → one [`Wal::sync`] (group commit) → acknowledge. Readers that must not touch
//! a live directory use [`scan`] and [`LogState::replay`] instead.

use std::any::Any;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, Error, Position, Result};
use crate::failpoint;
use crate::format::{self, decode_frame, is_torn, FrameError, SegmentId, SEGMENT_HEADER_LEN};
use crate::fs::{FileSystem, RealFs, SegmentFile};
use crate::record::{ConfStateRecord, EntryRecord, HardStateRecord, Record, SnapshotRecord};
use crate::snapshot::{self, SnapshotData};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// How a WAL is opened.
#[derive(Clone, Debug)]
pub struct Options {
    /// Size of a new segment in bytes (preallocated with fallocate). Default: 64 MiB.
    /// Minimum: 4096. A segment is made larger when a single batch needs it.
    pub segment_size: u64,
    /// The filesystem. Default: [`RealFs`].
    pub fs: Arc<dyn FileSystem>,
    /// What [`Wal::open`] does with damage at the end of the last segment. Default:
    /// [`RecoveryMode::Strict`].
    pub recovery: RecoveryMode,
}

/// What recovery does with damage at the end of the last segment (FORMAT.md §6), as
/// raft-engine's `RecoveryMode` does. Damage that is followed by a valid record (corruption in
/// the middle of the log) refuses in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Repair only a torn write (etcd's `isTornEntry` rule); any other damage refuses.
    #[default]
    Strict,
    /// Also accept corrupt records confined to the end of the last segment: no valid record
    /// follows them. They are dropped like a torn write (the segment is kept as `.broken`), and
    /// a hard-state commit beyond the shortened log is lowered to its last entry.
    TruncateTail,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: 64 << 20,
            fs: Arc::new(RealFs),
            recovery: RecoveryMode::Strict,
        }
    }
}

/// How the last segment ends, as found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Records run cleanly to an end-of-data marker or end of file.
    Clean,
    /// A torn write at `offset` (FORMAT.md §6): repairable.
    Torn {
        /// Offset of the torn record.
        offset: u64,
        /// Why it does not decode.
        error: FrameError,
    },
    /// The segment header itself is missing or zero (crash during creation): repairable by
    /// removing the segment.
    BadHeader(crate::format::HeaderError),
    /// Corrupt records at `offset` with no valid record after them. Only reported by a scan in
    /// [`RecoveryMode::TruncateTail`] (a strict scan returns [`Error::Corruption`]); repaired
    /// like a torn write.
    Corrupt {
        /// Offset of the first corrupt record.
        offset: u64,
        /// What is wrong there.
        reason: Corruption,
        /// Entry indexes the damaged records claim, read without their checksum (so only a
        /// hint), in file order.
        claimed: Vec<u64>,
    },
}

impl Tail {
    /// Offset of the first record a repair drops, if the tail needs one (0 for a bad header).
    pub fn damage_offset(&self) -> Option<u64> {
        match self {
            Tail::Clean => None,
            Tail::BadHeader(_) => Some(0),
            Tail::Torn { offset, .. } | Tail::Corrupt { offset, .. } => Some(*offset),
        }
    }
}

/// One segment as read by [`scan`].
#[derive(Debug, Clone)]
pub struct ScannedSegment {
    /// Name-derived identity.
    pub id: SegmentId,
    /// Full path.
    pub path: PathBuf,
    /// File length in bytes.
    pub file_len: u64,
    /// Valid records with their byte offsets, in order.
    pub records: Vec<(u64, Record)>,
    /// Offset just past the last valid record (where the next record would go).
    pub end: u64,
    /// How the segment ends (always [`Tail::Clean`] for all but the last segment).
    pub tail: Tail,
    /// True when non-zero bytes follow the end-of-data marker (unacknowledged writes after a
    /// torn page); they are zeroed by the writer.
    pub dirty_after_end: bool,
}

/// Everything [`scan`] found in a data directory.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Segments in sequence order.
    pub segments: Vec<ScannedSegment>,
    /// Snapshot files `(term, index)` present, ascending by index.
    pub snapshots: Vec<(u64, u64)>,
}

/// Reads and validates every segment in `dir` without locking or writing anything.
///
/// Errors: [`Error::Io`] for failed reads, [`Error::Corruption`] for damage anywhere except a
/// torn tail of the last segment, which is reported in [`ScannedSegment::tail`].
pub fn scan(fs: &dyn FileSystem, dir: &Path) -> Result<Scan> {
    scan_with(fs, dir, false, RecoveryMode::Strict)
}

/// [`scan`] in a given [`RecoveryMode`]: in [`RecoveryMode::TruncateTail`] corrupt records
/// confined to the end of the last segment are reported as [`Tail::Corrupt`] instead of an
/// error.
pub fn scan_mode(fs: &dyn FileSystem, dir: &Path, mode: RecoveryMode) -> Result<Scan> {
    scan_with(fs, dir, false, mode)
}

/// [`scan`] of a directory whose lock the caller holds: segments are mapped rather than copied
/// into memory ([`FileSystem::read_locked`]).
fn scan_locked(fs: &dyn FileSystem, dir: &Path, mode: RecoveryMode) -> Result<Scan> {
    scan_with(fs, dir, true, mode)
}

fn scan_with(fs: &dyn FileSystem, dir: &Path, locked: bool, mode: RecoveryMode) -> Result<Scan> {
    let names = fs
        .list(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    let mut ids: Vec<SegmentId> = names.iter().filter_map(|n| SegmentId::parse(n)).collect();
    ids.sort();
    let mut snapshots: Vec<(u64, u64)> = names
        .iter()
        .filter_map(|n| snapshot::parse_name(n))
        .collect();
    snapshots.sort_by_key(|&(t, i)| (i, t));
    let mut out = Scan {
        segments: Vec::with_capacity(ids.len()),
        snapshots,
    };
    for (i, id) in ids.iter().enumerate() {
        let path = dir.join(id.file_name());
        if i > 0 && id.seq != ids[i - 1].seq + 1 {
            return Err(Error::corrupt(
                &path,
                0,
                Corruption::SequenceGap {
                    expected: ids[i - 1].seq + 1,
                    found: id.seq,
                },
            ));
        }
        let is_last = i + 1 == ids.len();
        let bytes: Box<dyn std::ops::Deref<Target = [u8]>> = if locked {
            fs.read_locked(&path)
        } else {
            fs.read(&path).map(|v| Box::new(v) as _)
        }
        .map_err(|e| Error::io("read segment", &path, e))?;
        match scan_segment_mode(&path, *id, &bytes, is_last, mode) {
            (seg, None) => out.segments.push(seg),
            (_, Some(e)) => return Err(e),
        }
    }
    Ok(out)
}

/// Validates one segment's bytes (see [`scan`]).
pub fn scan_segment(
    path: &Path,
    id: SegmentId,
    bytes: &[u8],
    is_last: bool,
) -> Result<ScannedSegment> {
    match scan_segment_partial(path, id, bytes, is_last) {
        (seg, None) => Ok(seg),
        (_, Some(e)) => Err(e),
    }
}

/// Like [`scan_segment`], but on corruption also returns the records that decoded before it
/// (for `muster-wal dump`, which shows what it can before reporting the damage).
pub fn scan_segment_partial(
    path: &Path,
    id: SegmentId,
    bytes: &[u8],
    is_last: bool,
) -> (ScannedSegment, Option<Error>) {
    scan_segment_mode(path, id, bytes, is_last, RecoveryMode::Strict)
}

/// [`scan_segment_partial`] in a given [`RecoveryMode`] (see [`scan_mode`]).
pub fn scan_segment_mode(
    path: &Path,
    id: SegmentId,
    bytes: &[u8],
    is_last: bool,
    mode: RecoveryMode,
) -> (ScannedSegment, Option<Error>) {
    let mut seg = ScannedSegment {
        id,
        path: path.to_path_buf(),
        file_len: bytes.len() as u64,
        records: Vec::new(),
        end: 0,
        tail: Tail::Clean,
        dirty_after_end: false,
    };
    if let Err(why) = id.check_header(bytes) {
        let head = &bytes[..bytes.len().min(SEGMENT_HEADER_LEN)];
        if is_last && head.iter().all(|&b| b == 0) {
            seg.tail = Tail::BadHeader(why);
            return (seg, None);
        }
        return (seg, Some(Error::corrupt(path, 0, Corruption::Header(why))));
    }
    let mut off = SEGMENT_HEADER_LEN;
    let mut err = None;
    loop {
        match decode_frame(id.seq, &bytes[off..]) {
            Ok(None) => {
                if off < bytes.len() {
                    if !is_last {
                        err = Some(Error::corrupt(
                            path,
                            off as u64,
                            Corruption::EarlyEnd {
                                remaining: (bytes.len() - off) as u64,
                            },
                        ));
                        break;
                    }
                    seg.dirty_after_end = !format::is_zero(&bytes[off..]);
                }
                break;
            }
            Ok(Some(frame)) => match Record::decode_payload(frame.kind, frame.payload) {
                Ok(rec) => {
                    seg.records.push((off as u64, rec));
                    off += frame.size;
                }
                Err(e) => {
                    err = Some(Error::corrupt(path, off as u64, e.into()));
                    break;
                }
            },
            Err(e) => {
                if is_last && is_torn(bytes, off, &e) {
                    seg.tail = Tail::Torn {
                        offset: off as u64,
                        error: e,
                    };
                } else {
                    err = Some(Error::corrupt(path, off as u64, e.into()));
                }
                break;
            }
        }
    }
    if let Some(Error::Corruption { offset, reason, .. }) = &err {
        // Damage in the last segment that no valid record follows is confined to its tail.
        if is_last
            && mode == RecoveryMode::TruncateTail
            && !valid_record_after(id.seq, bytes, *offset as usize)
        {
            seg.tail = Tail::Corrupt {
                offset: *offset,
                reason: reason.clone(),
                claimed: claimed_indexes(bytes, *offset as usize),
            };
            err = None;
        }
    }
    seg.end = off as u64;
    (seg, err)
}

/// True when a record with a valid frame and payload starts at any 8-byte aligned offset after
/// the damaged record at `off` (the frame CRC is salted with the segment's `seq`, so stale or
/// random bytes do not pass for one).
fn valid_record_after(seq: u64, bytes: &[u8], off: usize) -> bool {
    (off + 8..bytes.len()).step_by(8).any(|at| {
        matches!(decode_frame(seq, &bytes[at..]),
            Ok(Some(f)) if Record::decode_payload(f.kind, f.payload).is_ok())
    })
}

/// Entry indexes the frames from `off` on claim, read by their length word and decoded without
/// checking the CRC; stops at the first frame that cannot be walked. At most 1024.
fn claimed_indexes(bytes: &[u8], mut off: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < 1024 && off + format::RECORD_HEADER_LEN <= bytes.len() {
        let hdr = &bytes[off..off + format::RECORD_HEADER_LEN];
        if hdr.iter().all(|&b| b == 0) {
            break;
        }
        let len = u32::from_le_bytes(hdr[0..4].try_into().expect("4 bytes")) as usize;
        let size = format::frame_len(len);
        if len == 0 || len > format::MAX_PAYLOAD as usize || off + size > bytes.len() {
            break;
        }
        let payload =
            &bytes[off + format::RECORD_HEADER_LEN..off + format::RECORD_HEADER_LEN + len];
        if hdr[4] == format::Kind::Entry as u8 {
            if let Ok(Record::Entry(e)) = Record::decode_payload(format::Kind::Entry, payload) {
                out.push(e.index);
            }
        }
        off += size;
    }
    out
}

/// The raft state a log replays to: hard state, conf state, the latest snapshot marker and the
/// entries after the compaction point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogState {
    /// Latest hard state.
    pub hard_state: HardStateRecord,
    /// Latest conf state.
    pub conf_state: ConfStateRecord,
    /// Latest snapshot marker, if any.
    pub snapshot: Option<SnapshotRecord>,
    /// Entries after `compacted_index`, contiguous.
    /// Invariant: `entries[i].index == compacted_index + 1 + i`.
    pub entries: VecDeque<EntryRecord>,
    /// Entries at or below this index are gone (behind a snapshot or compacted).
    pub compacted_index: u64,
    /// Term of the entry at `compacted_index` (0 when unknown or at 0).
    pub compacted_term: u64,
    /// True once any record that fixes the log start (an entry or a snapshot) was seen.
    started: bool,
    /// The highest index a replayed log jumped over (its older segments were purged) that no
    /// snapshot marker has covered yet; 0 when none. A purge leaves a first segment whose head
    /// restates the snapshot current at its rotation, older than its first entry; the marker of
    /// the snapshot that allowed the purge comes later in the log. Replay ends with this 0.
    unvouched: u64,
    /// The hard-state commit replay lowered to the last entry because a [`Tail::Corrupt`] was
    /// dropped ([`RecoveryMode::TruncateTail`]); `None` otherwise.
    lowered_commit: Option<u64>,
}

impl LogState {
    /// Index of the last entry (the compaction point when there are none).
    pub fn last_index(&self) -> u64 {
        self.compacted_index + self.entries.len() as u64
    }

    /// Index of the first available entry (`compacted_index + 1`).
    pub fn first_index(&self) -> u64 {
        self.compacted_index + 1
    }

    /// Term of entry `index` if known (the compaction point or an available entry).
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.compacted_index {
            return Some(self.compacted_term);
        }
        if index < self.compacted_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.compacted_index - 1) as usize].term)
    }

    /// Checks that `rec` may be applied (used before writing, so a bad request writes nothing).
    pub fn check(&self, rec: &Record) -> Result<(), Corruption> {
        if let Record::Entry(e) = rec {
            if self.entries.is_empty() {
                // At the log's start, or right behind a snapshot marker: a jump is the start of a
                // log whose older segments were purged (see `unvouched`).
                return Ok(());
            }
            if e.index > self.last_index() + 1 {
                return Err(Corruption::Gap {
                    expected: self.last_index() + 1,
                    found: e.index,
                });
            }
        }
        if let Record::Snapshot(s) = rec {
            if !s.discard_log && self.started && s.index > self.last_index() {
                return Err(Corruption::Gap {
                    expected: self.last_index(),
                    found: s.index,
                });
            }
            if !s.discard_log
                && self.started
                && s.index < self.compacted_index
                && self.snapshot.is_none()
            {
                return Err(Corruption::Gap {
                    expected: s.index + 1,
                    found: self.compacted_index + 1,
                });
            }
        }
        Ok(())
    }

    /// Applies one record (FORMAT.md §4 replay meaning). Errors leave the state unchanged.
    pub fn apply(&mut self, rec: Record) -> Result<(), Corruption> {
        self.check(&rec)?;
        match rec {
            Record::Entry(e) => {
                if self.entries.is_empty() && e.index > self.compacted_index + 1 {
                    // A log whose older segments were purged starts mid-way; a snapshot marker
                    // must follow to vouch for the start (checked at the end of replay).
                    self.compacted_index = e.index - 1;
                    self.compacted_term = 0;
                    self.unvouched = e.index - 1;
                }
                self.started = true;
                if e.index <= self.compacted_index {
                    return Ok(());
                }
                let keep = (e.index - self.compacted_index - 1) as usize;
                self.entries.truncate(keep);
                self.entries.push_back(e);
            }
            Record::HardState(h) => self.hard_state = h,
            Record::ConfState(c) => self.conf_state = c,
            Record::Snapshot(s) => {
                self.started = true;
                // A snapshot is committed state: the hard state can never lag behind it, even
                // if the hard state record written after the marker was lost.
                self.hard_state.commit = self.hard_state.commit.max(s.index);
                self.hard_state.term = self.hard_state.term.max(s.term);
                if s.discard_log {
                    self.entries.clear();
                    self.compacted_index = s.index;
                    self.compacted_term = s.term;
                    self.conf_state = s.conf_state.clone();
                } else if s.index >= self.compacted_index {
                    let drop = (s.index - self.compacted_index) as usize;
                    self.entries.drain(..drop.min(self.entries.len()));
                    self.compacted_index = s.index;
                    self.compacted_term = s.term;
                }
                if s.index >= self.unvouched {
                    self.unvouched = 0;
                }
                self.snapshot = Some(s);
            }
        }
        Ok(())
    }

    /// Replays a whole [`Scan`]; gaps are corruption naming the file and record offset.
    pub fn replay(scan: &Scan) -> Result<LogState> {
        Self::replay_taking(&mut scan.clone())
    }

    /// Like [`LogState::replay`], but moves the records out of `scan` instead of copying them
    /// (recovery of a large log holds each entry's bytes once). `scan`'s segments are left
    /// with empty `records`.
    pub fn replay_taking(scan: &mut Scan) -> Result<LogState> {
        let mut st = LogState::default();
        st.entries
            .reserve(scan.segments.iter().map(|s| s.records.len()).sum());
        for seg in &mut scan.segments {
            for (off, rec) in std::mem::take(&mut seg.records) {
                st.apply(rec)
                    .map_err(|why| Error::corrupt(&seg.path, off, why))?;
            }
        }
        if st.unvouched > 0 {
            let seg = &scan.segments[0];
            return Err(Error::corrupt(
                &seg.path,
                SEGMENT_HEADER_LEN as u64,
                Corruption::Gap {
                    expected: st.snapshot.as_ref().map_or(1, |s| s.index + 1),
                    found: st.unvouched + 1,
                },
            ));
        }
        if st.hard_state.commit > st.last_index() {
            let seg = scan.segments.last().expect("a commit implies a segment");
            if matches!(seg.tail, Tail::Corrupt { .. }) {
                // The operator chose to drop the damaged tail: what it committed is gone.
                st.lowered_commit = Some(st.hard_state.commit);
                st.hard_state.commit = st.last_index();
                return Ok(st);
            }
            return Err(Error::corrupt(
                &seg.path,
                seg.end,
                Corruption::CommitBeyondLog {
                    commit: st.hard_state.commit,
                    last: st.last_index(),
                },
            ));
        }
        Ok(st)
    }

    /// Records that restate this state at the start of a new segment.
    fn restate(&self) -> Vec<Record> {
        let mut v = Vec::new();
        if let Some(s) = &self.snapshot {
            v.push(Record::Snapshot(SnapshotRecord {
                discard_log: false,
                ..s.clone()
            }));
        }
        v.push(Record::HardState(self.hard_state));
        v.push(Record::ConfState(self.conf_state.clone()));
        v
    }
}

/// What recovery did at open, for logging.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segments read.
    pub segments: usize,
    /// Records replayed.
    pub records: usize,
    /// A torn tail was cut: `(segment path, offset, path of the kept .broken copy)`.
    pub repaired: Option<(PathBuf, u64, PathBuf)>,
    /// Corrupt records were dropped from the end of the log ([`RecoveryMode::TruncateTail`]).
    pub dropped: Option<DroppedTail>,
}

/// What [`RecoveryMode::TruncateTail`] dropped, for the log and for `muster-wal repair`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTail {
    /// The last segment.
    pub segment: PathBuf,
    /// Offset of the first dropped (corrupt) record.
    pub offset: u64,
    /// Bytes from `offset` to the end of the segment file (zeroed by the repair).
    pub bytes: u64,
    /// What is wrong with the first dropped record.
    pub reason: Corruption,
    /// The last entry index kept: every entry after it is gone.
    pub kept_last_index: u64,
    /// Entry indexes the dropped records claim (read without their CRC, a hint only).
    pub claimed: Vec<u64>,
    /// The hard-state commit before it was lowered to `kept_last_index`, if it was.
    pub commit_lowered_from: Option<u64>,
}

impl DroppedTail {
    /// The dropped entry indexes as text: `"8..=9"`, or `"8.."` when the damaged records do not
    /// say (the end is then unknown).
    pub fn index_range(&self) -> String {
        index_range(self.kept_last_index + 1, &self.claimed)
    }
}

/// Entry indexes dropped from `first` on, given the indexes damaged records `claimed`:
/// `"8..=9"`, or `"8.."` when none of them names an index at or after `first`.
pub fn index_range(first: u64, claimed: &[u64]) -> String {
    match claimed.iter().copied().filter(|&i| i >= first).max() {
        Some(last) => format!("{first}..={last}"),
        None => format!("{first}.."),
    }
}

impl std::fmt::Display for DroppedTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dropped {} bytes from {} at byte {} ({}): entries {} (the log now ends at index {})",
            self.bytes,
            self.segment.display(),
            self.offset,
            self.reason,
            self.index_range(),
            self.kept_last_index
        )?;
        if let Some(c) = self.commit_lowered_from {
            write!(f, "; commit lowered from {c} to {}", self.kept_last_index)?;
        }
        Ok(())
    }
}

/// The writer. Owns the data directory (flock on `LOCK`) while alive.
pub struct Wal {
    dir: PathBuf,
    opts: Options,
    _lock: Box<dyn Any + Send>,
    segments: Vec<SegmentId>,
    active: Box<dyn SegmentFile>,
    write_off: usize,
    synced_off: usize,
    poisoned: Option<&'static str>,
    state: LogState,
    recovery: Recovery,
    scratch: Vec<u8>,
    /// The snapshot validated by [`Wal::open`], until [`Wal::take_opened_snapshot`] takes it.
    opened_snapshot: Option<SnapshotData>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("segments", &self.segments)
            .field("write_off", &self.write_off)
            .field("synced_off", &self.synced_off)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// Repairs a torn tail of the last segment in place (FORMAT.md §6): keeps `<segment>.broken`,
/// then zeroes from the torn record to the end (or removes a segment with a zero header).
/// Returns the path of the `.broken` copy. Used by [`Wal::open`] and `muster-wal repair`; the
/// caller must hold the directory lock.
pub fn repair_tail(
    fs: &dyn FileSystem,
    dir: &Path,
    seg: &ScannedSegment,
) -> Result<Option<PathBuf>> {
    let broken = PathBuf::from(format!("{}.broken", seg.path.display()));
    match &seg.tail {
        Tail::Clean => Ok(None),
        Tail::BadHeader(_) => {
            let bytes = fs
                .read(&seg.path)
                .map_err(|e| Error::io("read segment", &seg.path, e))?;
            fs.write_synced(&broken, &bytes)
                .map_err(|e| Error::io("write .broken copy", &broken, e))?;
            fs.remove(&seg.path)
                .map_err(|e| Error::io("remove segment", &seg.path, e))?;
            fs.sync_dir(dir)
                .map_err(|e| Error::io("fsync directory", dir, e))?;
            Ok(Some(broken))
        }
        Tail::Torn { offset, .. } | Tail::Corrupt { offset, .. } => {
            let bytes = fs
                .read(&seg.path)
                .map_err(|e| Error::io("read segment", &seg.path, e))?;
            fs.write_synced(&broken, &bytes)
                .map_err(|e| Error::io("write .broken copy", &broken, e))?;
            fs.sync_dir(dir)
                .map_err(|e| Error::io("fsync directory", dir, e))?;
            let mut f = fs
                .open_mapped(&seg.path)
                .map_err(|e| Error::io("mmap segment", &seg.path, e))?;
            zero_to_end(f.as_mut(), *offset as usize)
                .map_err(|e| Error::io("msync segment", &seg.path, e))?;
            Ok(Some(broken))
        }
    }
}

/// Zeroes `[from, len)` of `f` and syncs it, if any byte there is non-zero (etcd's ZeroToEnd).
fn zero_to_end(f: &mut dyn SegmentFile, from: usize) -> std::io::Result<()> {
    let len = f.len();
    if from >= len || format::is_zero(&f.bytes()[from..]) {
        return Ok(());
    }
    const CHUNK: usize = 1 << 16;
    let zeros = [0u8; CHUNK];
    let mut off = from;
    while off < len {
        let n = CHUNK.min(len - off);
        f.write_at(off, &zeros[..n]);
        off += n;
    }
    f.sync(from, len - from)
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`: takes the lock, scans and validates every segment,
    /// repairs a torn tail of the last one, replays the records and checks the snapshot they
    /// name. Corruption anywhere else, or any IO error, is returned and nothing is changed.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Wal> {
        let dir = dir.as_ref().to_path_buf();
        if opts.segment_size < 4096 {
            return Err(Error::Invalid(format!(
                "segment_size {} is below the 4096-byte minimum",
                opts.segment_size
            )));
        }
        let fs = opts.fs.clone();
        fs.create_dir_all(&dir)
            .map_err(|e| Error::io("create directory", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs.lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked { path: dir.clone() }
            } else {
                Error::io("lock", &lock_path, e)
            }
        })?;
        let mut scanned = scan_locked(fs.as_ref(), &dir, opts.recovery)?;
        let mut recovery = Recovery {
            segments: scanned.segments.len(),
            ..Recovery::default()
        };
        recovery.records = scanned.segments.iter().map(|s| s.records.len()).sum();
        let state = LogState::replay_taking(&mut scanned)?;
        if let Some(last) = scanned.segments.last() {
            if let Tail::Corrupt {
                offset,
                reason,
                claimed,
            } = &last.tail
            {
                recovery.dropped = Some(DroppedTail {
                    segment: last.path.clone(),
                    offset: *offset,
                    bytes: last.file_len - offset,
                    reason: reason.clone(),
                    kept_last_index: state.last_index(),
                    claimed: claimed.clone(),
                    commit_lowered_from: state.lowered_commit,
                });
            }
        }
        let opened_snapshot = match &state.snapshot {
            Some(s) => Some(snapshot::read(fs.as_ref(), &dir, s.term, s.index)?),
            None => None,
        };
        // The directory is valid: from here on we may change it.
        if let Some(last) = scanned.segments.last() {
            if let Some(broken) = repair_tail(fs.as_ref(), &dir, last)? {
                let off = last.tail.damage_offset().unwrap_or(0);
                recovery.repaired = Some((last.path.clone(), off, broken));
                if matches!(last.tail, Tail::BadHeader(_)) {
                    scanned.segments.pop();
                }
            } else if last.dirty_after_end {
                let broken = PathBuf::from(format!("{}.broken", last.path.display()));
                let bytes = fs
                    .read(&last.path)
                    .map_err(|e| Error::io("read segment", &last.path, e))?;
                fs.write_synced(&broken, &bytes)
                    .map_err(|e| Error::io("write .broken copy", &broken, e))?;
                recovery.repaired = Some((last.path.clone(), last.end, broken));
            }
        }
        Self::remove_stale(fs.as_ref(), &dir, &state)?;
        let segments: Vec<SegmentId> = scanned.segments.iter().map(|s| s.id).collect();
        let mut wal = match scanned.segments.last() {
            Some(last) => {
                let mut active = fs
                    .open_mapped(&last.path)
                    .map_err(|e| Error::io("mmap segment", &last.path, e))?;
                zero_to_end(active.as_mut(), last.end as usize)
                    .map_err(|e| Error::io("msync segment", &last.path, e))?;
                Wal {
                    dir,
                    opts,
                    _lock: lock,
                    segments,
                    active,
                    write_off: last.end as usize,
                    synced_off: last.end as usize,
                    poisoned: None,
                    state,
                    recovery,
                    scratch: Vec::new(),
                    opened_snapshot,
                }
            }
            None => {
                let id = SegmentId {
                    seq: 1,
                    first_index: state.last_index() + 1,
                };
                let (active, end) = Self::create_segment(&dir, &opts, id, &[], 0)?;
                let path = dir.join(id.file_name());
                fs.rename(&Self::tmp_path(&dir, id), &path)
                    .map_err(|e| Error::io("rename segment", &path, e))?;
                fs.sync_dir(&dir)
                    .map_err(|e| Error::io("fsync directory", &dir, e))?;
                Wal {
                    dir,
                    opts,
                    _lock: lock,
                    segments: vec![id],
                    active,
                    write_off: end,
                    synced_off: end,
                    poisoned: None,
                    state,
                    recovery,
                    scratch: Vec::new(),
                    opened_snapshot,
                }
            }
        };
        wal.scratch.reserve(4096);
        if wal.state.lowered_commit.is_some() {
            // Make the lowered commit durable, so the next (strict) open agrees with this one.
            let hs = wal.state.hard_state;
            wal.append(&[Record::HardState(hs)])?;
            wal.sync()?;
        }
        Ok(wal)
    }

    /// Deletes `*.tmp` files and snapshots other than the one the log names.
    fn remove_stale(fs: &dyn FileSystem, dir: &Path, state: &LogState) -> Result<()> {
        let keep = state
            .snapshot
            .as_ref()
            .map(|s| snapshot::file_name(s.term, s.index));
        let mut removed = false;
        for name in fs
            .list(dir)
            .map_err(|e| Error::io("list directory", dir, e))?
        {
            let stale = name.ends_with(".tmp")
                || (snapshot::parse_name(&name).is_some() && Some(&name) != keep.as_ref());
            if stale {
                let p = dir.join(&name);
                fs.remove(&p)
                    .map_err(|e| Error::io("remove stale file", &p, e))?;
                removed = true;
            }
        }
        if removed {
            fs.sync_dir(dir)
                .map_err(|e| Error::io("fsync directory", dir, e))?;
        }
        Ok(())
    }

    fn tmp_path(dir: &Path, id: SegmentId) -> PathBuf {
        dir.join(format!("{}.tmp", id.file_name()))
    }

    /// Creates `id` as a `.tmp` file holding the header and `restate` records, synced. On error
    /// the tmp file is removed.
    fn create_segment(
        dir: &Path,
        opts: &Options,
        id: SegmentId,
        restate: &[Record],
        min_room: usize,
    ) -> Result<(Box<dyn SegmentFile>, usize)> {
        let mut buf = id.encode_header().to_vec();
        for r in restate {
            r.encode(id.seq, &mut buf)?;
        }
        let need = (buf.len() + min_room) as u64;
        let len = opts.segment_size.max(need.div_ceil(4096) * 4096);
        let tmp = Self::tmp_path(dir, id);
        let fs = opts.fs.as_ref();
        let mut f = fs
            .allocate(&tmp, len)
            .map_err(|e| Error::io("fallocate segment", &tmp, e))
            .inspect_err(|_| {
                let _ = fs.remove(&tmp);
            })?;
        f.write_at(0, &buf);
        if let Err(e) = f.sync(0, buf.len()) {
            drop(f);
            let _ = fs.remove(&tmp);
            return Err(Error::io("msync new segment", &tmp, e));
        }
        Ok((f, buf.len()))
    }

    fn check_poison(&self) -> Result<()> {
        match self.poisoned {
            Some(op) => Err(Error::Poisoned { op }),
            None => Ok(()),
        }
    }

    fn poison(&mut self, op: &'static str, path: PathBuf, e: std::io::Error) -> Error {
        self.poisoned.get_or_insert(op);
        Error::io(op, path, e)
    }

    fn active_path(&self) -> PathBuf {
        self.dir.join(self.active_id().file_name())
    }

    fn active_id(&self) -> SegmentId {
        *self
            .segments
            .last()
            .expect("a wal always has an active segment")
    }

    /// Appends records to the active segment (rotating when full) and applies them to
    /// [`Wal::state`]. Nothing is durable until [`Wal::sync`] returns.
    ///
    /// Entries must be contiguous with the log (an index may rewind, raft's conflict overwrite,
    /// but never skip); a bad batch is refused with [`Error::Invalid`] before anything is
    /// written. On an IO error (e.g. `ENOSPC` at rotation) part of the batch may be written but
    /// unsynced; retrying the same batch is safe.
    ///
    /// Returns the position just past the last record.
    pub fn append(&mut self, records: &[Record]) -> Result<Position> {
        self.check_poison()?;
        failpoint::hit(failpoint::BEFORE_APPEND)
            .map_err(|e| Error::io("append", self.active_path(), e))?;
        let mut probe = self.state.clone_shallow();
        for r in records {
            probe
                .apply_light(r)
                .map_err(|why| Error::Invalid(format!("{} record refused: {why}", r.kind())))?;
        }
        let payloads: Vec<Vec<u8>> = records.iter().map(Record::encode_payload).collect();
        let total: usize = payloads.iter().map(|p| format::frame_len(p.len())).sum();
        if let Some(p) = payloads
            .iter()
            .find(|p| p.len() > format::MAX_PAYLOAD as usize)
        {
            return Err(Error::Invalid(format!(
                "record of {} bytes exceeds the {} byte limit",
                p.len(),
                format::MAX_PAYLOAD
            )));
        }
        // Rotate up front when the batch does not fit, so a normal batch never spans segments
        // and ENOSPC leaves nothing half-written.
        if self.write_off + total > self.active.len() {
            self.rotate(total)?;
        }
        for (rec, payload) in records.iter().zip(&payloads) {
            let size = format::frame_len(payload.len());
            if self.write_off + size > self.active.len() {
                self.rotate(size)?;
            }
            self.scratch.clear();
            format::encode_frame(self.active_id().seq, rec.kind(), payload, &mut self.scratch);
            self.active.write_at(self.write_off, &self.scratch);
            self.write_off += size;
            self.state
                .apply(rec.clone())
                .expect("record checked before writing");
        }
        let pos = Position {
            seq: self.active_id().seq,
            offset: self.write_off as u64,
        };
        failpoint::hit(failpoint::AFTER_APPEND)
            .map_err(|e| Error::io("append", self.active_path(), e))?;
        Ok(pos)
    }

    /// Makes everything appended so far durable (msync of the dirty range: fdatasync). One call
    /// commits a whole group of appends. A failure poisons the WAL.
    pub fn sync(&mut self) -> Result<()> {
        self.check_poison()?;
        let path = self.active_path();
        if let Err(e) = failpoint::hit(failpoint::BEFORE_SYNC) {
            return Err(self.poison("msync", path, e));
        }
        if self.write_off > self.synced_off {
            if let Err(e) = self
                .active
                .sync(self.synced_off, self.write_off - self.synced_off)
            {
                return Err(self.poison("msync", path, e));
            }
            self.synced_off = self.write_off;
        }
        failpoint::hit(failpoint::AFTER_SYNC)
            .map_err(|e| Error::io("msync", self.active_path(), e))?;
        Ok(())
    }

    /// Starts a new segment with room for at least `min_room` more bytes (FORMAT.md §5).
    fn rotate(&mut self, min_room: usize) -> Result<()> {
        let old = self.active_id();
        let id = SegmentId {
            seq: old.seq + 1,
            first_index: self.state.last_index() + 1,
        };
        let restate = self.state.restate();
        // Step 1: the new segment exists as a synced tmp file, or we fail with nothing changed.
        let (file, end) = Self::create_segment(&self.dir, &self.opts, id, &restate, min_room)?;
        // Step 2: seal the old segment.
        let old_path = self.active_path();
        if let Err(e) = self.active.seal(self.write_off) {
            return Err(self.poison("seal segment", old_path, e));
        }
        self.synced_off = self.write_off;
        let tmp = Self::tmp_path(&self.dir, id);
        let path = self.dir.join(id.file_name());
        if let Err(e) = failpoint::hit(failpoint::ROTATE_BEFORE_RENAME) {
            return Err(self.poison("rename segment", tmp, e));
        }
        // Step 3: publish it.
        if let Err(e) = self.opts.fs.rename(&tmp, &path) {
            return Err(self.poison("rename segment", tmp, e));
        }
        if let Err(e) = self.opts.fs.sync_dir(&self.dir) {
            return Err(self.poison("fsync directory", self.dir.clone(), e));
        }
        self.segments.push(id);
        self.active = file;
        self.write_off = end;
        self.synced_off = end;
        Ok(())
    }

    /// Writes a snapshot file atomically, then a durable snapshot marker. With `discard_log`
    /// the snapshot replaces the whole log (one received from a leader); otherwise entries up to
    /// its index are compacted and later ones kept. Also syncs everything appended before.
    pub fn write_snapshot(&mut self, snap: &SnapshotData, discard_log: bool) -> Result<()> {
        self.check_poison()?;
        let marker = Record::Snapshot(SnapshotRecord {
            index: snap.index,
            term: snap.term,
            conf_state: snap.conf_state.clone(),
            discard_log,
        });
        self.state
            .clone_shallow()
            .apply_light(&marker)
            .map_err(|why| Error::Invalid(format!("snapshot refused: {why}")))?;
        snapshot::write(self.opts.fs.as_ref(), &self.dir, snap)?;
        self.append(std::slice::from_ref(&marker))?;
        self.sync()
    }

    /// Deletes whole segments whose live entries are all at or below the compaction point
    /// (FORMAT.md §5 "Purge"), oldest first, then old snapshot files. Returns how many segments
    /// were deleted.
    pub fn purge(&mut self) -> Result<usize> {
        self.check_poison()?;
        let upto = self.state.compacted_index;
        let mut n = 0;
        while self.segments.len() > 1 && self.segments[1].first_index.saturating_sub(1) <= upto {
            let path = self.dir.join(self.segments[0].file_name());
            failpoint::hit(failpoint::PURGE_BEFORE_REMOVE)
                .map_err(|e| Error::io("remove segment", &path, e))?;
            self.opts
                .fs
                .remove(&path)
                .map_err(|e| Error::io("remove segment", &path, e))?;
            self.segments.remove(0);
            n += 1;
        }
        Self::remove_stale(self.opts.fs.as_ref(), &self.dir, &self.state)?;
        if n > 0 {
            self.opts
                .fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("fsync directory", &self.dir, e))?;
        }
        Ok(n)
    }

    /// Drops in-memory entries at or below `index` (which must not exceed the snapshot index)
    /// and purges segments behind it.
    pub fn compact(&mut self, index: u64) -> Result<usize> {
        let snap = self.state.snapshot.as_ref().map_or(0, |s| s.index);
        if index > snap {
            return Err(Error::Invalid(format!(
                "compact to {index} is beyond the snapshot index {snap}"
            )));
        }
        if index > self.state.compacted_index {
            let term = self.state.term(index).unwrap_or(0);
            let drop = (index - self.state.compacted_index) as usize;
            self.state.entries.drain(..drop);
            self.state.compacted_index = index;
            self.state.compacted_term = term;
        }
        self.purge()
    }

    /// The replayed state (hard state, conf state, snapshot marker, entries).
    pub fn state(&self) -> &LogState {
        &self.state
    }

    /// What recovery did when this WAL was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options it was opened with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Live segments, oldest first; the last one is being written.
    pub fn segments(&self) -> &[SegmentId] {
        &self.segments
    }

    /// Position just past the last durable (synced) record.
    pub fn synced(&self) -> Position {
        Position {
            seq: self.active_id().seq,
            offset: self.synced_off as u64,
        }
    }

    /// The snapshot the log named at open, as validated then; `None` after the first call or
    /// when there was none. Recovery takes it instead of reading and validating the file again.
    pub fn take_opened_snapshot(&mut self) -> Option<SnapshotData> {
        self.opened_snapshot.take()
    }

    /// Loads the snapshot the log names, validated.
    pub fn load_snapshot(&self) -> Result<Option<SnapshotData>> {
        match &self.state.snapshot {
            None => Ok(None),
            Some(s) => snapshot::read(self.opts.fs.as_ref(), &self.dir, s.term, s.index).map(Some),
        }
    }
}

impl LogState {
    /// Index bookkeeping without entries, for cheap validation of a batch.
    fn clone_shallow(&self) -> LightState {
        LightState {
            last: self.last_index(),
            compacted: self.compacted_index,
        }
    }
}

/// Index bookkeeping only, to validate a batch before writing it. Stricter than replay: a
/// writer's log always starts at 1 or right after a snapshot.
struct LightState {
    last: u64,
    compacted: u64,
}

impl LightState {
    fn apply_light(&mut self, rec: &Record) -> Result<(), Corruption> {
        match rec {
            Record::Entry(e) => {
                if e.index <= self.compacted || e.index > self.last + 1 {
                    return Err(Corruption::Gap {
                        expected: self.last + 1,
                        found: e.index,
                    });
                }
                self.last = e.index;
            }
            Record::Snapshot(s) => {
                if s.discard_log {
                    self.last = s.index;
                    self.compacted = s.index;
                } else {
                    if s.index > self.last {
                        return Err(Corruption::Gap {
                            expected: self.last,
                            found: s.index,
                        });
                    }
                    self.compacted = self.compacted.max(s.index);
                }
            }
            Record::HardState(_) | Record::ConfState(_) => {}
        }
        Ok(())
    }
}
