//! The replicated state machine: every persistent domain behind one [`Domain`] trait, the log
//! entries that change them and the snapshot image that holds them.
//!
//! A log entry carries an event (`muster_storage::event`, FORMAT.md §8) tagged with its domain;
//! [`StateMachine::decode_entry`] turns it into a [`Change`] and [`StateMachine::apply`] folds
//! it into that domain. The snapshot image is a container of one section per domain
//! ([`StateMachine::encode`]). Domains today: `naming` (persistent services and instances,
//! [`crate::consensus::naming`]) and `config` (the config center: configs, history,
//! namespaces, [`crate::consensus::config`]); cluster metadata will add its own by
//! implementing [`Domain`] and a [`Change`] variant. An image without a domain's section
//! (written before that domain existed) loads the domain empty.
//!
//! Old data still reads: events written before domains (`MEV1`) are `naming` events, and a
//! snapshot image that is not a container (`MUSTER-DURABLE/2`, or 0.1's JSON) is the naming
//! domain alone.

use muster_storage::event::Event;
use raft::eraftpb::EntryType;

use crate::consensus::config::{ConfigOp, ConfigState};
use crate::consensus::naming::{event_key, parse_event_key, Durable};
use crate::naming::op::PersistentOp;
use crate::naming::service::ServiceKey;

/// Why persisted bytes (an op body, a snapshot image) do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not start with the expected magic.
    #[error("{what} starts with {found:?}, expected {expected}")]
    Magic {
        /// What was read, e.g. `op body`, `snapshot state`.
        what: &'static str,
        /// The first bytes found, lossily as text.
        found: String,
        /// What may start it.
        expected: String,
    },
    /// The archive or JSON is malformed.
    #[error("{what} is not valid: {why}")]
    Invalid {
        /// What was read, e.g. `snapshot image`, `settings of service public##g@@s in the
        /// snapshot`.
        what: String,
        /// The decoder's message.
        why: String,
    },
    /// A service key that is not `namespace##group@@name`.
    #[error("bad service key {0:?}")]
    BadKey(String),
    /// An event or snapshot section of a domain this version does not know (written by a
    /// newer Muster): refusing is safer than skipping it.
    #[error("unknown state-machine domain {0:?} (written by a newer version?)")]
    UnknownDomain(String),
}

impl DecodeError {
    pub(crate) fn invalid(what: impl Into<String>, why: impl std::fmt::Display) -> DecodeError {
        DecodeError::Invalid {
            what: what.into(),
            why: why.to_string(),
        }
    }
}

/// One domain of the replicated state machine.
///
/// Invariant: applying the same ops in the same order gives the same state on every member, and
/// `decode_image(encode_image())` gives the state back.
pub trait Domain: Default {
    /// Its tag in log events and snapshot sections. Never changes once data is written.
    const NAME: &'static str;
    /// A committed change of this domain.
    type Op;
    /// Decodes the op of an event of this domain (`key` and `body` as the event holds them).
    fn decode_op(key: &str, body: &[u8]) -> Result<Self::Op, DecodeError>;
    /// Folds a committed op in. Never fails: preconditions are checked before proposing.
    fn apply(&mut self, op: &Self::Op);
    /// Like [`Domain::apply`], moving the op in (recovery keeps no op).
    fn apply_owned(&mut self, op: Self::Op) {
        self.apply(&op);
    }
    /// Records the domain holds (paces snapshots: their cost is O(records)).
    fn records(&self) -> u64;
    /// The domain's snapshot section.
    fn encode_image(&self) -> Vec<u8>;
    /// Reads a section written by [`Domain::encode_image`].
    fn decode_image(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// A committed change, decoded from a log entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A persistent naming change to one service.
    Naming {
        /// The service.
        key: ServiceKey,
        /// The change.
        op: PersistentOp,
    },
    /// A config-center change (a config, its history, a namespace).
    Config(ConfigOp),
}

impl Change {
    /// The log event that carries this change (`time_ms`: wall clock, display only).
    pub fn to_event(&self, time_ms: u64) -> Event {
        match self {
            Change::Naming { key, op } => Event {
                domain: Durable::NAME.to_string(),
                service_key: event_key(key),
                kind: op.kind().to_string(),
                time_ms,
                body: op.encode_body(),
            },
            Change::Config(op) => Event {
                domain: ConfigState::NAME.to_string(),
                service_key: op.event_key(),
                kind: op.kind().to_string(),
                time_ms,
                body: op.encode_body(),
            },
        }
    }
}

/// Every domain's state, and how far the log has been applied to it.
#[derive(Debug, Default, PartialEq)]
pub struct StateMachine {
    /// Raft index of the last entry applied.
    pub applied: u64,
    /// The `naming` domain: persistent services, clusters and instances.
    pub naming: Durable,
    /// The `config` domain: configs, their history, namespaces (shared with the shards).
    pub config: ConfigState,
}

/// First 16 bytes of a snapshot image that is a container of domain sections (format 3).
pub const STATE_MAGIC: &[u8; 16] = b"MUSTER-STATE/3\0\0";

impl StateMachine {
    /// The change a committed entry carries: `None` for raft's own entries (no-ops, conf
    /// changes). The event is read in place and only the op is decoded.
    pub fn decode_entry(entry_type: i32, data: &[u8]) -> Result<Option<Change>, DecodeError> {
        if entry_type != EntryType::EntryNormal as i32 || data.is_empty() {
            return Ok(None);
        }
        let decoded = Event::visit(data, |ev| match ev.domain {
            Durable::NAME => {
                let (key, op) = Durable::decode_op(ev.service_key, ev.body)?;
                Ok(Change::Naming { key, op })
            }
            ConfigState::NAME => Ok(Change::Config(ConfigState::decode_op(
                ev.service_key,
                ev.body,
            )?)),
            other => Err(DecodeError::UnknownDomain(other.to_string())),
        });
        match decoded {
            None => Ok(None),
            Some(r) => r.map_err(|e| DecodeError::invalid("event", e))?.map(Some),
        }
    }

    /// Folds a committed change at raft `index` into its domain.
    pub fn apply(&mut self, index: u64, change: &Change) {
        self.applied = self.applied.max(index);
        match change {
            Change::Naming { key, op } => self.naming.apply_change(key, op),
            Change::Config(op) => self.config.apply(op),
        }
    }

    /// Like [`StateMachine::apply`], moving the change in.
    pub fn apply_owned(&mut self, index: u64, change: Change) {
        self.applied = self.applied.max(index);
        match change {
            Change::Naming { key, op } => self.naming.apply_owned((key, op)),
            Change::Config(op) => self.config.apply_owned(op),
        }
    }

    /// Records over all domains.
    pub fn records(&self) -> u64 {
        self.naming.records() + self.config.records()
    }

    /// The snapshot image: [`STATE_MAGIC`], a section count (u32) and 4 zero bytes, then per
    /// domain its name length (u32), 4 zero bytes, its body length (u64), the name and the
    /// body, each zero-padded to 8 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let sections = [
            (Durable::NAME, self.naming.encode_image()),
            (ConfigState::NAME, self.config.encode_image()),
        ];
        let mut out = Vec::with_capacity(64 + sections.iter().map(|s| s.1.len()).sum::<usize>());
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        for (name, body) in &sections {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&(body.len() as u64).to_le_bytes());
            for part in [name.as_bytes(), body.as_slice()] {
                out.extend_from_slice(part);
                out.resize(out.len().next_multiple_of(8), 0);
            }
        }
        out
    }

    /// Reads an image written by [`StateMachine::encode`], or an older naming-only image.
    /// `applied` is left 0: the caller sets it to the snapshot's index.
    pub fn decode(bytes: &[u8]) -> Result<StateMachine, DecodeError> {
        let Some(mut rest) = bytes.strip_prefix(STATE_MAGIC.as_slice()) else {
            return Ok(StateMachine {
                applied: 0,
                naming: Durable::decode(bytes)?,
                config: ConfigState::default(),
            });
        };
        let short = || DecodeError::invalid("snapshot image", "cut short");
        let mut take = |n: usize| -> Result<&[u8], DecodeError> {
            let padded = n.checked_next_multiple_of(8).ok_or_else(short)?;
            if rest.len() < padded {
                return Err(short());
            }
            let (head, tail) = rest.split_at(padded);
            rest = tail;
            Ok(&head[..n])
        };
        let count = u32::from_le_bytes(take(8)?[..4].try_into().expect("4 bytes"));
        let mut sm = StateMachine::default();
        for _ in 0..count {
            let h = take(16)?;
            let name_len = u32::from_le_bytes(h[..4].try_into().expect("4 bytes")) as usize;
            let body_len = usize::try_from(u64::from_le_bytes(h[8..].try_into().expect("8")))
                .map_err(|_| short())?;
            let name = std::str::from_utf8(take(name_len)?)
                .map_err(|e| DecodeError::invalid("snapshot section name", e))?
                .to_string();
            let body = take(body_len)?;
            match name.as_str() {
                Durable::NAME => sm.naming = Durable::decode_image(body)?,
                ConfigState::NAME => sm.config = ConfigState::decode_image(body)?,
                _ => return Err(DecodeError::UnknownDomain(name)),
            }
        }
        Ok(sm)
    }
}

impl Domain for Durable {
    const NAME: &'static str = "naming";
    type Op = (ServiceKey, PersistentOp);

    fn decode_op(key: &str, body: &[u8]) -> Result<Self::Op, DecodeError> {
        let key = parse_event_key(key).ok_or_else(|| DecodeError::BadKey(key.to_string()))?;
        Ok((key, PersistentOp::decode_body(body)?))
    }

    fn apply(&mut self, (key, op): &Self::Op) {
        self.apply_change(key, op);
    }

    fn apply_owned(&mut self, (key, op): Self::Op) {
        self.apply_change_owned(&key, op);
    }

    fn records(&self) -> u64 {
        (self.instance_count() + self.service_count()) as u64
    }

    fn encode_image(&self) -> Vec<u8> {
        self.encode()
    }

    fn decode_image(bytes: &[u8]) -> Result<Self, DecodeError> {
        Durable::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::instance::InstanceSpec;

    fn register(ip: &str) -> Change {
        let mut instance = InstanceSpec::new(ip, 3306);
        instance.ephemeral = false;
        Change::Naming {
            key: ServiceKey::new("public", "DEFAULT_GROUP@@db"),
            op: PersistentOp::Register { instance },
        }
    }

    #[test]
    fn entries_of_both_event_formats_apply_to_naming() {
        let change = register("10.0.0.1");
        let ev = change.to_event(1);
        assert_eq!(ev.domain, "naming");
        let normal = EntryType::EntryNormal as i32;
        for data in [ev.encode(), ev.encode_v1()] {
            let got = StateMachine::decode_entry(normal, &data).unwrap();
            assert_eq!(got.as_ref(), Some(&change));
        }
        assert_eq!(StateMachine::decode_entry(normal, &[]).unwrap(), None);
        let conf = EntryType::EntryConfChange as i32;
        assert_eq!(
            StateMachine::decode_entry(conf, &ev.encode()).unwrap(),
            None
        );
        let mut sm = StateMachine::default();
        sm.apply(5, &change);
        sm.apply_owned(6, register("10.0.0.2"));
        assert_eq!((sm.applied, sm.naming.instance_count()), (6, 2));
    }

    fn config_publish(data_id: &str) -> Change {
        use crate::consensus::config::{ConfigKey, ConfigSpec, Retention, Variant};
        Change::Config(ConfigOp::Publish {
            key: ConfigKey::new("", "DEFAULT_GROUP", data_id),
            variant: Variant::Normal,
            spec: ConfigSpec {
                content: format!("content of {data_id}"),
                kind: "text".into(),
                ..Default::default()
            },
            time_ms: 7,
            retention: Retention::default(),
        })
    }

    #[test]
    fn config_changes_are_config_events_and_fold_into_the_image() {
        let change = config_publish("app.yaml");
        let ev = change.to_event(1);
        assert_eq!(
            (
                ev.domain.as_str(),
                ev.service_key.as_str(),
                ev.kind.as_str()
            ),
            ("config", "app.yaml+DEFAULT_GROUP", "publish")
        );
        let normal = EntryType::EntryNormal as i32;
        let got = StateMachine::decode_entry(normal, &ev.encode()).unwrap();
        assert_eq!(got.as_ref(), Some(&change));
        let mut sm = StateMachine::default();
        sm.apply(1, &register("10.0.0.1"));
        sm.apply(2, &change);
        sm.apply_owned(3, config_publish("b"));
        assert_eq!(sm.config.read().configs.len(), 2);
        let back = StateMachine::decode(&sm.encode()).unwrap();
        assert_eq!(back.naming, sm.naming);
        assert_eq!(back.config, sm.config);
        // An image written before the config domain (naming section only) loads with no
        // configs.
        let mut old = StateMachine::default();
        old.apply(1, &register("10.0.0.1"));
        let naming_only = {
            let body = old.naming.encode_image();
            let mut out = STATE_MAGIC.to_vec();
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&6u32.to_le_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&(body.len() as u64).to_le_bytes());
            out.extend_from_slice(b"naming\0\0");
            out.extend_from_slice(&body);
            out.resize(out.len().next_multiple_of(8), 0);
            out
        };
        let loaded = StateMachine::decode(&naming_only).unwrap();
        assert_eq!(loaded.naming, old.naming);
        assert!(loaded.config.read().configs.is_empty());
    }

    #[test]
    fn an_unknown_domain_is_refused_not_skipped() {
        let mut ev = register("10.0.0.1").to_event(1);
        ev.domain = "quantum".into();
        let err = StateMachine::decode_entry(EntryType::EntryNormal as i32, &ev.encode());
        assert_eq!(err, Err(DecodeError::UnknownDomain("quantum".into())));
    }

    #[test]
    fn the_image_round_trips_and_old_images_still_read() {
        let mut sm = StateMachine::default();
        for i in 1..=20 {
            sm.apply(i, &register(&format!("10.0.0.{i}")));
        }
        let image = sm.encode();
        assert!(image.starts_with(STATE_MAGIC));
        assert_eq!(image.len() % 8, 0);
        let back = StateMachine::decode(&image).unwrap();
        assert_eq!(back.naming, sm.naming);
        assert_eq!(
            back.applied, 0,
            "the caller sets applied from the snapshot index"
        );
        // A naming-only image (format 2) is the naming domain.
        let old = StateMachine::decode(&sm.naming.encode()).unwrap();
        assert_eq!(old.naming, sm.naming);
        // Every cut of the container is refused, never trusted or a panic.
        for cut in STATE_MAGIC.len()..image.len() {
            assert!(StateMachine::decode(&image[..cut]).is_err(), "cut at {cut}");
        }
        // A section of an unknown domain is refused.
        let mut other = image.clone();
        let name_at = STATE_MAGIC.len() + 8 + 16;
        other[name_at..name_at + 6].copy_from_slice(b"nomads");
        assert_eq!(
            StateMachine::decode(&other),
            Err(DecodeError::UnknownDomain("nomads".into()))
        );
    }
}
