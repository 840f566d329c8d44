//! `muster-wal`: the on-call engineer's view of Muster's write-ahead log.
//!
//! Every command but `repair` is read-only: it never takes the data directory's lock and never
//! writes, so it is safe on the directory of a running server (a record being written at that
//! moment may show as a torn tail). Exit status: 0 success, 1 damage found or refused, 2 usage.

mod time;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use muster::consensus::state_machine::DecodeError;
use muster_storage::format::{frame_len, SegmentId};
use muster_storage::fs::{FileSystem, RealFs};
use muster_storage::record::{EntryRecord, Record};
use muster_storage::snapshot;
use muster_storage::wal::{self, LogState, RecoveryMode, Scan, Tail};
use muster_storage::{Error, Event};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(
    name = "muster-wal",
    version,
    about = "Inspect Muster's write-ahead log: dump, verify, stats, history, repair",
    long_about = "Inspect Muster's write-ahead log.\n\n\
        Usage is `muster-wal <COMMAND> <DATA_DIR>`. All commands except `repair` are read-only: \
        they never take the directory lock and never write, so they are safe on a live server's \
        data directory.\n\n\
        Exit status: 0 success, 1 damage found (or repair refused), 2 bad usage.",
    after_help = "Examples:\n  muster-wal verify /var/lib/muster\n  \
        muster-wal dump /var/lib/muster --service orders --since 2025-11-13T00:00:00Z\n  \
        muster-wal history /var/lib/muster --service 'public##DEFAULT_GROUP@@orders'\n  \
        muster-wal repair /var/lib/muster   # only with the server stopped"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Filters for `dump`. With any filter set, only matching raft entries are shown.
#[derive(clap::Args, Debug, Default)]
struct Filter {
    /// Only events of this service: a full key (`public##DEFAULT_GROUP@@orders`) or a bare
    /// service name (`orders`, matching it in every namespace and group).
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Only entries with index >= N.
    #[arg(long, value_name = "N")]
    from: Option<u64>,
    /// Only entries with index <= N.
    #[arg(long, value_name = "N")]
    to: Option<u64>,
    /// Only events at or after this time (RFC 3339 UTC like 2025-11-13T02:00:00Z, or epoch ms).
    #[arg(long, value_name = "TIME", value_parser = time::parse_time)]
    since: Option<u64>,
    /// Only events at or before this time (RFC 3339 UTC, or epoch ms).
    #[arg(long, value_name = "TIME", value_parser = time::parse_time)]
    until: Option<u64>,
}

impl Filter {
    fn active(&self) -> bool {
        self.service.is_some()
            || self.from.is_some()
            || self.to.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }

    fn matches(&self, e: &EntryRecord) -> bool {
        if self.from.is_some_and(|f| e.index < f) || self.to.is_some_and(|t| e.index > t) {
            return false;
        }
        if self.service.is_none() && self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(Ok(ev)) = Event::decode(&e.data) else {
            return false;
        };
        if let Some(s) = &self.service {
            if !service_matches(s, &ev.service_key) {
                return false;
            }
        }
        !(self.since.is_some_and(|t| ev.time_ms < t) || self.until.is_some_and(|t| ev.time_ms > t))
    }
}

fn service_matches(want: &str, key: &str) -> bool {
    key == want || key.rsplit_once("@@").is_some_and(|(_, name)| name == want)
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print every record in log order (segment@offset, kind, fields).
    Dump {
        /// The server's data directory.
        data_dir: PathBuf,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        filter: Filter,
    },
    /// Check every record and snapshot; exit 1 naming the file and byte offset of any damage.
    Verify {
        /// The server's data directory.
        data_dir: PathBuf,
    },
    /// Counts by record kind, bytes, segments, snapshot and index range.
    Stats {
        /// The server's data directory.
        data_dir: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every event of one service, or of one config (`--config DATAID --group G`), in log
    /// order, with times (overwritten entries excluded).
    History {
        /// The server's data directory.
        data_dir: PathBuf,
        /// Full service key or bare service name (see `dump --service`).
        #[arg(
            long,
            value_name = "NAME",
            required_unless_present = "config",
            conflicts_with = "config"
        )]
        service: Option<String>,
        /// A config's data id (its `config` domain events).
        #[arg(long, value_name = "DATAID")]
        config: Option<String>,
        /// The config's group.
        #[arg(
            long,
            value_name = "GROUP",
            default_value = "DEFAULT_GROUP",
            requires = "config"
        )]
        group: String,
        /// The config's namespace (empty: public).
        #[arg(long, value_name = "TENANT", default_value = "", requires = "config")]
        tenant: String,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cut a torn tail of the last segment, keeping `<segment>.broken`. Refuses any other
    /// damage, and refuses while a server holds the directory. Stop the server first.
    Repair {
        /// The server's data directory.
        data_dir: PathBuf,
        /// Also drop corrupt records at the very end of the last segment (what the server's
        /// `--wal-recovery truncate-tail` does at start): prints what it drops first. Damage
        /// followed by a valid record is still refused.
        #[arg(long)]
        truncate_corrupt_tail: bool,
        /// Do not ask for confirmation (it is only asked when stdin is a terminal).
        #[arg(long)]
        yes: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("muster-wal: {msg}");
            ExitCode::from(1)
        }
    }
}

/// The WAL directory of a data dir: `DATA_DIR/raft` (where the server keeps it), or `DATA_DIR`
/// itself when it holds segments. Anything else is an error, so a wrong path never "verifies".
fn wal_dir(data_dir: &Path) -> Result<PathBuf, String> {
    let has_segments = |d: &Path| {
        std::fs::read_dir(d)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .any(|e| SegmentId::parse(&e.file_name().to_string_lossy()).is_some())
            })
            .unwrap_or(false)
    };
    let raft = data_dir.join("raft");
    if raft.is_dir() {
        return Ok(raft);
    }
    if has_segments(data_dir) {
        return Ok(data_dir.to_path_buf());
    }
    Err(format!(
        "no write-ahead log in {} (expected segments in {}/raft or in the directory itself)",
        data_dir.display(),
        data_dir.display()
    ))
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    let mut cmd = cli.cmd;
    match &mut cmd {
        Cmd::Dump { data_dir, .. }
        | Cmd::Verify { data_dir }
        | Cmd::Stats { data_dir, .. }
        | Cmd::History { data_dir, .. }
        | Cmd::Repair { data_dir, .. } => *data_dir = wal_dir(data_dir)?,
    }
    match cmd {
        Cmd::Dump {
            data_dir,
            json,
            filter,
        } => dump(&data_dir, json, &filter),
        Cmd::Verify { data_dir } => verify(&data_dir),
        Cmd::Stats { data_dir, json } => stats(&data_dir, json),
        Cmd::History {
            data_dir,
            service,
            config,
            group,
            tenant,
            json,
        } => {
            let subject = match (service, config) {
                (Some(s), _) => Subject::Service(s),
                (None, Some(d)) => Subject::Config(
                    muster::consensus::config::ConfigKey::new(&tenant, &group, &d).group_key(),
                ),
                (None, None) => return Err("give --service or --config".into()),
            };
            history(&data_dir, &subject, json)
        }
        Cmd::Repair {
            data_dir,
            truncate_corrupt_tail: false,
            ..
        } => repair(&data_dir),
        Cmd::Repair { data_dir, yes, .. } => truncate_corrupt_tail(&data_dir, yes),
    }
}

/// Reads as many segments as decode, in order, stopping at the first corruption (returned
/// beside what was read, so `dump` can show the records before it). Read-only.
fn load(dir: &Path) -> Result<(Scan, Option<Error>), String> {
    let fs = RealFs;
    let names = fs
        .list(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut ids: Vec<SegmentId> = names.iter().filter_map(|n| SegmentId::parse(n)).collect();
    ids.sort();
    let mut scan = Scan {
        segments: Vec::new(),
        snapshots: names
            .iter()
            .filter_map(|n| snapshot::parse_name(n))
            .collect(),
    };
    scan.snapshots.sort_by_key(|&(t, i)| (i, t));
    for (i, id) in ids.iter().enumerate() {
        let path = dir.join(id.file_name());
        if i > 0 && id.seq != ids[i - 1].seq + 1 {
            let err = Error::Corruption {
                path,
                offset: 0,
                reason: muster_storage::Corruption::SequenceGap {
                    expected: ids[i - 1].seq + 1,
                    found: id.seq,
                },
            };
            return Ok((scan, Some(err)));
        }
        let bytes = fs
            .read(&path)
            .map_err(|e| format!("read segment {}: {e}", path.display()))?;
        let (seg, err) = wal::scan_segment_partial(&path, *id, &bytes, i + 1 == ids.len());
        scan.segments.push(seg);
        if err.is_some() {
            return Ok((scan, err));
        }
    }
    Ok((scan, None))
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn entry_type(t: u8) -> &'static str {
    match t {
        0 => "normal",
        1 => "confchange",
        2 => "confchange_v2",
        _ => "unknown",
    }
}

/// A binary op body (the server's `PersistentOp::encode_body`) as the op's JSON; `None` when
/// the body is not one.
fn op_json(body: &[u8]) -> Option<Result<String, DecodeError>> {
    if !body.starts_with(muster::consensus::naming::OP_MAGIC) {
        return None;
    }
    Some(
        muster::naming::op::PersistentOp::decode_body(body).map(|op| {
            serde_json::to_string(&op).unwrap_or_else(|e| format!("(op not printable: {e})"))
        }),
    )
}

fn hex(body: &[u8]) -> String {
    body.iter().map(|b| format!("{b:02x}")).collect()
}

fn body_text(body: &[u8]) -> String {
    match op_json(body) {
        Some(Ok(j)) => return j,
        Some(Err(e)) => return format!("undecodable({e}) hex:{}", hex(body)),
        None => {}
    }
    match std::str::from_utf8(body) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => {
            let hex: String = body.iter().take(64).map(|b| format!("{b:02x}")).collect();
            format!("hex:{hex}{}", if body.len() > 64 { "..." } else { "" })
        }
    }
}

fn body_json(body: &[u8]) -> Value {
    match op_json(body) {
        Some(Ok(j)) => return Value::String(j),
        Some(Err(e)) => return json!({ "error": e.to_string(), "hex": hex(body) }),
        None => {}
    }
    match std::str::from_utf8(body) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "hex": hex(body) }),
    }
}

/// The domain whose events name a service; others (config, cluster) show `domain` and `key`.
const NAMING: &str = muster_storage::event::V1_DOMAIN;

fn event_json(ev: &Event) -> Value {
    let mut v = if ev.domain == NAMING {
        json!({ "service": ev.service_key })
    } else {
        json!({ "domain": ev.domain, "key": ev.service_key })
    };
    let m = v.as_object_mut().expect("object");
    m.insert("kind".into(), json!(ev.kind));
    m.insert("time_ms".into(), json!(ev.time_ms));
    m.insert("time".into(), json!(time::format_ms(ev.time_ms)));
    m.insert("body".into(), body_json(&ev.body));
    v
}

fn entry_text(e: &EntryRecord) -> String {
    let mut s = format!(
        "index={} term={} type={}",
        e.index,
        e.term,
        entry_type(e.entry_type)
    );
    match Event::decode(&e.data) {
        Some(Ok(ev)) => s.push_str(&format!(
            " {}={} event={} time={} body={}",
            if ev.domain == NAMING {
                "service".to_string()
            } else {
                format!("domain={} key", ev.domain)
            },
            ev.service_key,
            ev.kind,
            time::format_ms(ev.time_ms),
            body_text(&ev.body)
        )),
        Some(Err(why)) => s.push_str(&format!(" data={} bytes (bad event: {why})", e.data.len())),
        None if e.entry_type != 0 => {
            let what = muster::consensus::describe_conf_change(i32::from(e.entry_type), &e.data);
            s.push_str(&format!(" change={}", what.unwrap_or_default()));
        }
        None if e.data.is_empty() => s.push_str(" data=empty"),
        None => s.push_str(&format!(" data={} bytes", e.data.len())),
    }
    s
}

fn record_text(rec: &Record) -> String {
    match rec {
        Record::Entry(e) => entry_text(e),
        Record::HardState(h) => format!("term={} vote={} commit={}", h.term, h.vote, h.commit),
        Record::ConfState(c) => format!(
            "voters={:?} learners={:?} voters_outgoing={:?} learners_next={:?} auto_leave={}",
            c.voters, c.learners, c.voters_outgoing, c.learners_next, c.auto_leave
        ),
        Record::Snapshot(s) => format!(
            "index={} term={} voters={:?} discard_log={}",
            s.index, s.term, s.conf_state.voters, s.discard_log
        ),
    }
}

fn record_json(seg: &str, off: u64, rec: &Record) -> Value {
    let mut v = json!({ "segment": seg, "offset": off, "kind": rec.kind().name() });
    let m = v.as_object_mut().expect("object");
    match rec {
        Record::Entry(e) => {
            m.insert("index".into(), json!(e.index));
            m.insert("term".into(), json!(e.term));
            m.insert("entry_type".into(), json!(entry_type(e.entry_type)));
            m.insert("data_len".into(), json!(e.data.len()));
            if let Some(c) =
                muster::consensus::describe_conf_change(i32::from(e.entry_type), &e.data)
            {
                m.insert("change".into(), json!(c));
            }
            match Event::decode(&e.data) {
                Some(Ok(ev)) => {
                    m.insert("event".into(), event_json(&ev));
                }
                Some(Err(why)) => {
                    m.insert("event_error".into(), json!(why.to_string()));
                }
                None => {}
            }
        }
        Record::HardState(h) => {
            m.insert("term".into(), json!(h.term));
            m.insert("vote".into(), json!(h.vote));
            m.insert("commit".into(), json!(h.commit));
        }
        Record::ConfState(c) => {
            m.insert("voters".into(), json!(c.voters));
            m.insert("learners".into(), json!(c.learners));
            m.insert("voters_outgoing".into(), json!(c.voters_outgoing));
            m.insert("learners_next".into(), json!(c.learners_next));
            m.insert("auto_leave".into(), json!(c.auto_leave));
        }
        Record::Snapshot(s) => {
            m.insert("index".into(), json!(s.index));
            m.insert("term".into(), json!(s.term));
            m.insert("voters".into(), json!(s.conf_state.voters));
            m.insert("discard_log".into(), json!(s.discard_log));
        }
    }
    v
}

fn tail_warning(scan: &Scan, dir: &Path) -> Option<String> {
    let last = scan.segments.last()?;
    match &last.tail {
        Tail::Clean => None,
        Tail::Torn { offset, error } => Some(format!(
            "torn tail in {} at byte {offset}: {error} (the server repairs it at start; or run `muster-wal repair {}`)",
            file_name(&last.path),
            dir.display()
        )),
        Tail::BadHeader(why) => Some(format!(
            "last segment {} has no valid header ({why}); repairable",
            file_name(&last.path)
        )),
        // Only a truncate-tail scan reports this, and the commands here scan strictly.
        Tail::Corrupt { offset, reason, .. } => Some(format!(
            "corrupt tail in {} at byte {offset}: {reason}",
            file_name(&last.path)
        )),
    }
}

/// For a strict scan that failed: what `--truncate-corrupt-tail` would drop, if the damage is
/// confined to the end of the last segment.
fn truncate_hint(dir: &Path) -> Option<String> {
    let scan = wal::scan_mode(&RealFs, dir, RecoveryMode::TruncateTail).ok()?;
    let last = scan.segments.last()?;
    let Tail::Corrupt { claimed, .. } = &last.tail else {
        return None;
    };
    let state = LogState::replay(&scan).ok()?;
    let first = state.last_index() + 1;
    Some(format!(
        "the damage is confined to the end of the last segment: `muster-wal repair \
         --truncate-corrupt-tail {}` (or starting with --wal-recovery truncate-tail) would drop \
         entries {} and keep the log up to index {}",
        dir.display(),
        wal::index_range(first, claimed),
        state.last_index()
    ))
}

fn dump(dir: &Path, json_out: bool, filter: &Filter) -> Result<ExitCode, String> {
    let (scan, err) = load(dir)?;
    for seg in &scan.segments {
        let name = file_name(&seg.path);
        for (off, rec) in &seg.records {
            if filter.active() {
                match rec {
                    Record::Entry(e) if filter.matches(e) => {}
                    _ => continue,
                }
            }
            if json_out {
                println!("{}", record_json(&name, *off, rec));
            } else {
                println!("{name}@{off} {} {}", rec.kind(), record_text(rec));
            }
        }
    }
    if let Some(w) = tail_warning(&scan, dir) {
        eprintln!("muster-wal: warning: {w}");
    }
    match err {
        Some(e) => Err(format!("stopped at damage: {e}")),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Checks frames, replay continuity, and every snapshot file.
fn verify(dir: &Path) -> Result<ExitCode, String> {
    let (scan, err) = load(dir)?;
    if let Some(e) = err {
        return Err(match truncate_hint(dir) {
            Some(hint) => format!("verify failed: {e}\n{hint}"),
            None => format!("verify failed: {e}"),
        });
    }
    let state = LogState::replay(&scan).map_err(|e| format!("verify failed: {e}"))?;
    let fs = RealFs;
    for (term, index) in &scan.snapshots {
        snapshot::read(&fs, dir, *term, *index).map_err(|e| format!("verify failed: {e}"))?;
    }
    if let Some(s) = &state.snapshot {
        snapshot::read(&fs, dir, s.term, s.index).map_err(|e| format!("verify failed: {e}"))?;
    }
    if let Some(w) = tail_warning(&scan, dir) {
        return Err(format!("verify failed: {w}"));
    }
    let records: usize = scan.segments.iter().map(|s| s.records.len()).sum();
    println!(
        "ok: {} segments, {} records, {} snapshot files verified; log {}..={}",
        scan.segments.len(),
        records,
        scan.snapshots.len(),
        state.first_index(),
        state.last_index()
    );
    Ok(ExitCode::SUCCESS)
}

fn stats(dir: &Path, json_out: bool) -> Result<ExitCode, String> {
    let (scan, err) = load(dir)?;
    if let Some(e) = err {
        return Err(format!("stats stopped at damage: {e}"));
    }
    let state = LogState::replay(&scan).map_err(|e| e.to_string())?;
    let mut by_kind: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let (mut min_i, mut max_i) = (u64::MAX, 0u64);
    let mut events = 0u64;
    let mut services = BTreeSet::new();
    for seg in &scan.segments {
        for (_, rec) in &seg.records {
            let c = by_kind.entry(rec.kind().name()).or_default();
            c.0 += 1;
            c.1 += frame_len(rec.encode_payload().len()) as u64;
            if let Record::Entry(e) = rec {
                min_i = min_i.min(e.index);
                max_i = max_i.max(e.index);
                if let Some(Ok(ev)) = Event::decode(&e.data) {
                    events += 1;
                    services.insert(ev.service_key);
                }
            }
        }
    }
    let disk: u64 = scan.segments.iter().map(|s| s.file_len).sum();
    let used: u64 = scan.segments.iter().map(|s| s.end).sum();
    let records: u64 = by_kind.values().map(|c| c.0).sum();
    let snap = state.snapshot.as_ref().map(|s| {
        let name = snapshot::file_name(s.term, s.index);
        let len = std::fs::metadata(dir.join(&name)).map_or(0, |m| m.len());
        (s.index, s.term, name, len)
    });
    let tail = tail_warning(&scan, dir).unwrap_or_else(|| "clean".into());
    let hs = state.hard_state;
    if json_out {
        let kinds: serde_json::Map<String, Value> = by_kind
            .iter()
            .map(|(k, (n, b))| (k.to_string(), json!({ "records": n, "bytes": b })))
            .collect();
        let v = json!({
            "segments": scan.segments.len(),
            "segment_files": scan.segments.iter().map(|s| file_name(&s.path)).collect::<Vec<_>>(),
            "bytes_on_disk": disk,
            "bytes_used": used,
            "records": records,
            "kinds": kinds,
            "entries_on_disk": if max_i == 0 { Value::Null } else { json!([min_i, max_i]) },
            "log": [state.first_index(), state.last_index()],
            "events": events,
            "services": services.len(),
            "snapshot": snap.as_ref().map(|(i, t, n, l)| json!({ "index": i, "term": t, "file": n, "bytes": l })),
            "hard_state": { "term": hs.term, "vote": hs.vote, "commit": hs.commit },
            "voters": state.conf_state.voters,
            "tail": tail,
        });
        println!("{v:#}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "segments:   {} ({}), {disk} bytes on disk, {used} used",
        scan.segments.len(),
        match (scan.segments.first(), scan.segments.last()) {
            (Some(a), Some(b)) => format!("{} .. {}", file_name(&a.path), file_name(&b.path)),
            _ => "none".into(),
        }
    );
    println!("records:    {records}");
    for (k, (n, b)) in &by_kind {
        println!("  {k:<10} {n:>6} records {b:>9} bytes");
    }
    if max_i == 0 {
        println!("entries:    none on disk");
    } else {
        println!("entries:    {min_i}..={max_i} on disk");
    }
    println!(
        "log:        {}..={} (after compaction)",
        state.first_index(),
        state.last_index()
    );
    println!("events:     {events} in {} services", services.len());
    match &snap {
        Some((i, t, n, l)) => println!("snapshot:   index {i}, term {t}, {n}, {l} bytes"),
        None => println!("snapshot:   none"),
    }
    println!(
        "hard state: term {}, vote {}, commit {}",
        hs.term, hs.vote, hs.commit
    );
    println!("conf state: voters {:?}", state.conf_state.voters);
    println!("tail:       {tail}");
    Ok(ExitCode::SUCCESS)
}

/// The effective log: raw entries in write order, where a rewrite of an index drops it and
/// everything after (raft overwrite) and a replacing snapshot drops everything before it.
/// Unlike replay, entries behind a snapshot that are still on disk are kept.
fn effective_entries(scan: &Scan) -> BTreeMap<u64, EntryRecord> {
    let mut log: BTreeMap<u64, EntryRecord> = BTreeMap::new();
    for seg in &scan.segments {
        for (_, rec) in &seg.records {
            match rec {
                Record::Entry(e) => {
                    log.split_off(&e.index);
                    log.insert(e.index, e.clone());
                }
                Record::Snapshot(s) if s.discard_log => log.clear(),
                _ => {}
            }
        }
    }
    log
}

/// Whose history `history` shows.
enum Subject {
    /// A naming service (full key or bare name).
    Service(String),
    /// A config, by its group key (`dataId+group[+tenant]`).
    Config(String),
}

impl Subject {
    fn matches(&self, domain: &str, key: &str) -> bool {
        match self {
            Subject::Service(s) => domain == NAMING && service_matches(s, key),
            Subject::Config(k) => domain == "config" && key == k,
        }
    }

    fn name(&self) -> &str {
        match self {
            Subject::Service(s) | Subject::Config(s) => s,
        }
    }
}

fn history(dir: &Path, subject: &Subject, json_out: bool) -> Result<ExitCode, String> {
    let (scan, err) = load(dir)?;
    let state = match &err {
        None => Some(LogState::replay(&scan).map_err(|e| e.to_string())?),
        Some(_) => None,
    };
    let commit = state.as_ref().map_or(0, |s| s.hard_state.commit);
    let log = effective_entries(&scan);
    let mut n = 0;
    let mut lines = Vec::new();
    for e in log.values() {
        let Some(Ok(ev)) = Event::decode(&e.data) else {
            continue;
        };
        if !subject.matches(&ev.domain, &ev.service_key) {
            continue;
        }
        n += 1;
        let committed = e.index <= commit;
        if json_out {
            let mut v = event_json(&ev);
            let m = v.as_object_mut().expect("object");
            m.insert("index".into(), json!(e.index));
            m.insert("term".into(), json!(e.term));
            m.insert("committed".into(), json!(committed));
            lines.push(v.to_string());
        } else {
            lines.push(format!(
                "{}  index={} term={} {:<10} {}{} {}",
                time::format_ms(ev.time_ms),
                e.index,
                e.term,
                ev.kind,
                ev.service_key,
                if committed { "" } else { " (uncommitted)" },
                body_text(&ev.body)
            ));
        }
    }
    if !json_out {
        let behind = state
            .as_ref()
            .and_then(|s| s.snapshot.as_ref())
            .map(|s| {
                let first = log.keys().next().copied().unwrap_or(s.index + 1);
                if first > 1 {
                    format!("; entries before {first} are only in snapshot {}", s.index)
                } else {
                    String::new()
                }
            })
            .unwrap_or_default();
        println!("history of {}: {n} events{behind}", subject.name());
    }
    for l in lines {
        println!("{l}");
    }
    match err {
        Some(e) => Err(format!("history stopped at damage: {e}")),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Takes the data directory's lock for a repair; refuses while a server holds it.
fn lock_for_repair(fs: &RealFs, dir: &Path) -> Result<Box<dyn std::any::Any + Send>, String> {
    fs.lock(&dir.join(wal::LOCK_FILE)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            format!(
                "refusing to repair {}: it is in use (LOCK held by a running server)",
                dir.display()
            )
        } else {
            format!("cannot lock {}: {e}", dir.display())
        }
    })
}

fn repair(dir: &Path) -> Result<ExitCode, String> {
    let fs = RealFs;
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let _lock = lock_for_repair(&fs, dir)?;
    let scan = wal::scan(&fs, dir).map_err(|e| match e {
        Error::Corruption { .. } => format!(
            "refusing to repair: {e}; only a torn tail of the last segment can be repaired, this needs a restore from a peer or backup"
        ),
        other => format!("repair failed: {other}"),
    })?;
    LogState::replay(&scan).map_err(|e| format!("refusing to repair: {e}"))?;
    let Some(last) = scan.segments.last() else {
        println!("nothing to repair: no segments");
        return Ok(ExitCode::SUCCESS);
    };
    let at = match &last.tail {
        Tail::Clean => {
            println!("nothing to repair: log is clean");
            return Ok(ExitCode::SUCCESS);
        }
        Tail::Torn { offset, .. } | Tail::Corrupt { offset, .. } => *offset,
        Tail::BadHeader(_) => 0,
    };
    let broken = wal::repair_tail(&fs, dir, last)
        .map_err(|e| format!("repair failed: {e}"))?
        .expect("a damaged tail is repaired");
    let kept = last.records.len();
    println!(
        "repaired: cut {} at byte {at} after {kept} good records; damaged copy kept as {}",
        file_name(&last.path),
        file_name(&broken)
    );
    Ok(ExitCode::SUCCESS)
}

/// `repair --truncate-corrupt-tail`: shows what would be dropped, asks when stdin is a terminal
/// (unless `yes`), then opens the log in [`RecoveryMode::TruncateTail`] exactly as the server
/// would at start, which keeps `.broken`, zeroes the tail and makes a lowered commit durable.
fn truncate_corrupt_tail(dir: &Path, yes: bool) -> Result<ExitCode, String> {
    use std::io::{BufRead, IsTerminal, Write};
    let fs = RealFs;
    let lock = lock_for_repair(&fs, dir)?;
    let scan = wal::scan_mode(&fs, dir, RecoveryMode::TruncateTail).map_err(|e| match e {
        Error::Corruption { .. } => format!(
            "refusing to repair: {e}; a valid record follows the damage (or it is not in the last segment), so dropping the tail would lose acknowledged records: restore from a peer or backup"
        ),
        other => format!("repair failed: {other}"),
    })?;
    let state = LogState::replay(&scan).map_err(|e| format!("refusing to repair: {e}"))?;
    let Some(last) = scan.segments.last() else {
        println!("nothing to repair: no segments");
        return Ok(ExitCode::SUCCESS);
    };
    match &last.tail {
        Tail::Clean => {
            println!("nothing to repair: log is clean");
            return Ok(ExitCode::SUCCESS);
        }
        Tail::Corrupt {
            offset,
            reason,
            claimed,
        } => {
            println!(
                "corrupt tail in {} at byte {offset}: {reason}",
                file_name(&last.path)
            );
            println!(
                "will drop: entries {} (records from byte {offset} to the end of the segment); the log will end at index {}",
                wal::index_range(state.last_index() + 1, claimed),
                state.last_index()
            );
        }
        Tail::Torn { offset, error } => println!(
            "torn tail in {} at byte {offset}: {error}; will cut it there",
            file_name(&last.path)
        ),
        Tail::BadHeader(why) => println!(
            "last segment {} has no valid header ({why}); will remove it",
            file_name(&last.path)
        ),
    }
    if !yes && std::io::stdin().is_terminal() {
        print!("Drop them? The segment is kept as .broken. Type 'yes' to go on: ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if answer.trim() != "yes" {
            println!("nothing changed");
            return Ok(ExitCode::FAILURE);
        }
    }
    drop(lock);
    let opts = wal::Options {
        recovery: RecoveryMode::TruncateTail,
        ..wal::Options::default()
    };
    let w = wal::Wal::open(dir, opts).map_err(|e| format!("repair failed: {e}"))?;
    let rec = w.recovery();
    if let Some((seg, _, broken)) = &rec.repaired {
        println!(
            "repaired: {}; the log ends at index {}; damaged copy kept as {}",
            file_name(seg),
            w.state().last_index(),
            file_name(broken)
        );
    }
    if let Some(d) = &rec.dropped {
        if let Some(c) = d.commit_lowered_from {
            println!(
                "commit lowered from {c} to {} (the entries it covered are gone)",
                d.kept_last_index
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn service_matching() {
        assert!(service_matches("orders", "public##DEFAULT_GROUP@@orders"));
        assert!(service_matches(
            "public##DEFAULT_GROUP@@orders",
            "public##DEFAULT_GROUP@@orders"
        ));
        assert!(!service_matches("order", "public##DEFAULT_GROUP@@orders"));
    }
}
