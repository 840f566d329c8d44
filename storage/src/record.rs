//! Record payloads (FORMAT.md §4): rkyv archives of small plain structs, converted to and from
//! raft-rs's protobuf types at the edge. Decoding validates the archive with bytecheck, so bytes
//! from disk are never trusted.

use raft::eraftpb::{ConfState, Entry, EntryType, HardState};
use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::format::{FrameError, Kind, MAX_PAYLOAD};

/// A raft log entry as stored (kind 1).
#[derive(
    Debug, Clone, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct EntryRecord {
    /// Raft index. Invariant: `index >= 1`.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// raft `EntryType` as a number (0 normal, 1 conf change, 2 conf change v2).
    pub entry_type: u8,
    /// Opaque entry data (the server's `Event`, FORMAT.md §8).
    pub data: Vec<u8>,
    /// Opaque raft context.
    pub context: Vec<u8>,
}

/// Raft hard state (kind 2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct HardStateRecord {
    /// Current term.
    pub term: u64,
    /// Vote in `term` (0 = none).
    pub vote: u64,
    /// Highest known committed index.
    pub commit: u64,
}

/// Raft membership (kind 3, and inside snapshots).
#[derive(
    Debug, Clone, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct ConfStateRecord {
    /// Voter ids.
    pub voters: Vec<u64>,
    /// Learner ids.
    pub learners: Vec<u64>,
    /// Outgoing voters during a joint change.
    pub voters_outgoing: Vec<u64>,
    /// Learners after a joint change leaves.
    pub learners_next: Vec<u64>,
    /// Leave the joint configuration automatically.
    pub auto_leave: bool,
}

/// Snapshot marker (kind 4).
#[derive(
    Debug, Clone, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct SnapshotRecord {
    /// Index of the last entry the snapshot covers.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Membership at `index`.
    pub conf_state: ConfStateRecord,
    /// True when the snapshot replaced the whole log (received from a leader): every entry
    /// before this record is dropped on replay, not only those `<= index`.
    pub discard_log: bool,
}

/// One decoded WAL record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Kind 1.
    Entry(EntryRecord),
    /// Kind 2.
    HardState(HardStateRecord),
    /// Kind 3.
    ConfState(ConfStateRecord),
    /// Kind 4.
    Snapshot(SnapshotRecord),
}

fn to_bytes<T>(v: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    rkyv::to_bytes::<rancor::Error>(v)
        .expect("serializing plain data into memory cannot fail")
        .into_vec()
}

/// Decodes an rkyv archive of `T` from unaligned, untrusted bytes (copied into an aligned
/// buffer, then validated).
pub(crate) fn from_bytes<T>(payload: &[u8]) -> Result<T, FrameError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    // Archives need the alignment of their widest field (8: the u64s). Frames sit at 8-byte
    // offsets behind a 16-byte header, so a payload in a mapped segment is aligned and read in
    // place; only a payload elsewhere (e.g. a test's buffer) is copied first.
    let decode = |bytes: &[u8]| {
        rkyv::from_bytes::<T, rancor::Error>(bytes).map_err(|e| FrameError::Payload(e.to_string()))
    };
    if (payload.as_ptr() as usize).is_multiple_of(8) {
        if let Ok(v) = decode(payload) {
            return Ok(v);
        }
    }
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    decode(&aligned)
}

impl Record {
    /// The record kind.
    pub fn kind(&self) -> Kind {
        match self {
            Record::Entry(_) => Kind::Entry,
            Record::HardState(_) => Kind::HardState,
            Record::ConfState(_) => Kind::ConfState,
            Record::Snapshot(_) => Kind::Snapshot,
        }
    }

    /// Encodes the payload (without the frame).
    pub fn encode_payload(&self) -> Vec<u8> {
        let v = match self {
            Record::Entry(e) => to_bytes(e),
            Record::HardState(h) => to_bytes(h),
            Record::ConfState(c) => to_bytes(c),
            Record::Snapshot(s) => to_bytes(s),
        };
        debug_assert!(!v.is_empty());
        v
    }

    /// Decodes a payload of `kind`.
    pub fn decode_payload(kind: Kind, payload: &[u8]) -> Result<Record, FrameError> {
        Ok(match kind {
            Kind::Entry => Record::Entry(from_bytes(payload)?),
            Kind::HardState => Record::HardState(from_bytes(payload)?),
            Kind::ConfState => Record::ConfState(from_bytes(payload)?),
            Kind::Snapshot => Record::Snapshot(from_bytes(payload)?),
        })
    }

    /// Frames this record for a segment with sequence `seq`, appending to `out`.
    ///
    /// Fails when the payload exceeds [`MAX_PAYLOAD`].
    pub fn encode(&self, seq: u64, out: &mut Vec<u8>) -> Result<(), crate::Error> {
        let payload = self.encode_payload();
        if payload.len() > MAX_PAYLOAD as usize {
            return Err(crate::Error::Invalid(format!(
                "{} record of {} bytes exceeds the {} byte limit",
                self.kind(),
                payload.len(),
                MAX_PAYLOAD
            )));
        }
        crate::format::encode_frame(seq, self.kind(), &payload, out);
        Ok(())
    }
}

impl From<&Entry> for EntryRecord {
    fn from(e: &Entry) -> Self {
        EntryRecord {
            index: e.index,
            term: e.term,
            entry_type: e.get_entry_type() as u8,
            data: e.data.to_vec(),
            context: e.context.to_vec(),
        }
    }
}

impl EntryRecord {
    /// Converts to raft's `Entry`. Unknown entry types become `EntryNormal` (they cannot be
    /// written by this crate).
    pub fn to_entry(&self) -> Entry {
        let mut e = Entry {
            index: self.index,
            term: self.term,
            data: self.data.clone().into(),
            context: self.context.clone().into(),
            ..Entry::default()
        };
        e.set_entry_type(match self.entry_type {
            1 => EntryType::EntryConfChange,
            2 => EntryType::EntryConfChangeV2,
            _ => EntryType::EntryNormal,
        });
        e
    }
}

impl From<&HardState> for HardStateRecord {
    fn from(h: &HardState) -> Self {
        HardStateRecord {
            term: h.term,
            vote: h.vote,
            commit: h.commit,
        }
    }
}

impl HardStateRecord {
    /// Converts to raft's `HardState`.
    pub fn to_hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
            ..HardState::default()
        }
    }
}

impl From<&ConfState> for ConfStateRecord {
    fn from(c: &ConfState) -> Self {
        ConfStateRecord {
            voters: c.voters.clone(),
            learners: c.learners.clone(),
            voters_outgoing: c.voters_outgoing.clone(),
            learners_next: c.learners_next.clone(),
            auto_leave: c.auto_leave,
        }
    }
}

impl ConfStateRecord {
    /// Converts to raft's `ConfState`.
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            voters_outgoing: self.voters_outgoing.clone(),
            learners_next: self.learners_next.clone(),
            auto_leave: self.auto_leave,
            ..ConfState::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::decode_frame;
    use proptest::prelude::*;

    fn arb_conf() -> impl Strategy<Value = ConfStateRecord> {
        (
            proptest::collection::vec(any::<u64>(), 0..5),
            proptest::collection::vec(any::<u64>(), 0..3),
            proptest::collection::vec(any::<u64>(), 0..3),
            proptest::collection::vec(any::<u64>(), 0..3),
            any::<bool>(),
        )
            .prop_map(
                |(voters, learners, voters_outgoing, learners_next, auto_leave)| ConfStateRecord {
                    voters,
                    learners,
                    voters_outgoing,
                    learners_next,
                    auto_leave,
                },
            )
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (
                any::<u64>(),
                any::<u64>(),
                0u8..3,
                proptest::collection::vec(any::<u8>(), 0..300),
                proptest::collection::vec(any::<u8>(), 0..20)
            )
                .prop_map(|(index, term, entry_type, data, context)| Record::Entry(
                    EntryRecord {
                        index,
                        term,
                        entry_type,
                        data,
                        context
                    }
                )),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(term, vote, commit)| {
                Record::HardState(HardStateRecord { term, vote, commit })
            }),
            arb_conf().prop_map(Record::ConfState),
            (any::<u64>(), any::<u64>(), arb_conf(), any::<bool>()).prop_map(
                |(index, term, conf_state, discard_log)| Record::Snapshot(SnapshotRecord {
                    index,
                    term,
                    conf_state,
                    discard_log
                })
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any record framed in segment `seq` decodes back to itself, at any 8-aligned offset.
        #[test]
        fn record_round_trip(rec in arb_record(), seq in 1u64..1_000_000, lead in 0usize..4) {
            let mut buf = vec![0u8; lead * 8];
            // Make the leading bytes non-zero junk that is skipped by the offset.
            buf.iter_mut().for_each(|b| *b = 0xEE);
            rec.encode(seq, &mut buf).unwrap();
            let f = decode_frame(seq, &buf[lead * 8..]).unwrap().unwrap();
            prop_assert_eq!(f.size, buf.len() - lead * 8);
            prop_assert_eq!(Record::decode_payload(f.kind, f.payload).unwrap(), rec);
        }
    }

    #[test]
    fn raft_conversions_round_trip() {
        let mut e = Entry {
            index: 9,
            term: 2,
            data: b"payload".to_vec().into(),
            context: b"ctx".to_vec().into(),
            ..Entry::default()
        };
        e.set_entry_type(EntryType::EntryConfChangeV2);
        assert_eq!(EntryRecord::from(&e).to_entry(), e);
        let c = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            auto_leave: true,
            ..ConfState::default()
        };
        assert_eq!(ConfStateRecord::from(&c).to_conf_state(), c);
    }

    #[test]
    fn garbage_payload_with_valid_crc_is_a_payload_error() {
        // Forge a frame around bytes that are not an archive of HardStateRecord.
        let mut buf = Vec::new();
        crate::format::encode_frame(1, Kind::HardState, b"not rkyv", &mut buf);
        let f = decode_frame(1, &buf).unwrap().unwrap();
        assert!(matches!(
            Record::decode_payload(f.kind, f.payload),
            Err(FrameError::Payload(_))
        ));
    }
}
