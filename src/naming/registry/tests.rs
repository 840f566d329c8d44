//! The registry's unit tests, on a driven clock.

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::naming::view::ListQuery;

fn spec(ip: &str, port: u16) -> InstanceSpec {
    InstanceSpec::new(ip, port)
}

struct Fixture {
    clock: ManualClock,
    view: Arc<ReadView>,
    reg: Registry,
    key: ServiceKey,
}

impl Fixture {
    fn new(life: Lifecycle) -> Self {
        let clock = ManualClock::new(1_000);
        let view = Arc::new(ReadView::default());
        let reg = Registry::new(life, view.clone(), clock.now_ms());
        Fixture {
            clock,
            view,
            reg,
            key: ServiceKey::new("public", "DEFAULT_GROUP@@orders"),
        }
    }

    /// Applies `write` the way its owner shard does: at once, or (persistent) by applying the
    /// proposed ops as raft would commit them; then publishes.
    fn apply(&mut self, write: Write) -> ApiResult<Reply> {
        let now = self.clock.now_ms();
        let r = match self.reg.apply(&self.key, write, now) {
            Ok(Outcome::Applied(reply)) => Ok(reply),
            Ok(Outcome::Propose { ops, reply }) => ops
                .into_iter()
                .try_for_each(|op| self.reg.apply_committed(&self.key, op, now))
                .map(|()| reply),
            Err(e) => Err(e),
        };
        self.reg.flush(now);
        r
    }

    /// What the owner makes of `write`, without committing anything it proposes.
    fn plan(&mut self, write: Write) -> ApiResult<Outcome> {
        let now = self.clock.now_ms();
        let r = self.reg.apply(&self.key, write, now);
        self.reg.flush(now);
        r
    }

    /// Moves time forward in 100 ms steps, ticking like a shard does.
    fn run_for(&mut self, ms: u64) {
        for _ in 0..ms / 100 {
            self.clock.advance(100);
            let now = self.clock.now_ms();
            self.reg.tick(now);
            self.reg.flush(now);
        }
    }

    /// Deregisters the ephemeral `ip:80` in DEFAULT.
    fn deregister(&mut self, ip: &str) {
        self.apply(Write::Deregister {
            ip: ip.into(),
            port: 80,
            cluster: "DEFAULT".into(),
            durability: Durability::Ephemeral,
        })
        .unwrap();
    }

    /// A light beat for `ip:80` in DEFAULT.
    fn beat(&mut self, ip: &str) -> Reply {
        self.apply(Write::Beat {
            ip: ip.into(),
            port: 80,
            cluster: "DEFAULT".into(),
            register: None,
        })
        .unwrap()
    }

    fn health(&self) -> Option<bool> {
        let v = self.view.get(self.key.as_ref())?;
        v.instances.first().map(|i| i.healthy)
    }
}

#[test]
fn removing_a_service_takes_its_instances_out_of_every_counter() {
    let life = Lifecycle {
        empty_service_ms: 1_000,
        ..Lifecycle::default()
    };
    let mut f = Fixture::new(life);
    let now = f.clock.now_ms();
    let mut db = spec("10.0.0.9", 3306);
    db.ephemeral = false;
    f.reg
        .apply_committed(&f.key, PersistentOp::Register { instance: db }, now)
        .unwrap();
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    let mut sick = spec("10.0.0.2", 80);
    sick.healthy = false;
    f.apply(Write::Register(sick)).unwrap();
    assert_eq!((f.reg.stats().healthy, f.reg.stats().unhealthy), (2, 1));
    assert_eq!(f.view.census.total(), 1);
    // With a persistent instance the delete is refused and changes nothing.
    let e = f
        .reg
        .apply_committed(&f.key, PersistentOp::DeleteService, now)
        .unwrap_err();
    assert_eq!(
        (e.status, e.msg.as_str()),
        (
            400,
            "specified service has instances, serviceName : DEFAULT_GROUP@@orders"
        )
    );
    f.reg.flush(now);
    assert_eq!((f.reg.stats().healthy, f.reg.stats().unhealthy), (2, 1));
    // With only ephemeral ones (a register that raced the API's check) it follows the log.
    f.reg
        .apply_committed(
            &f.key,
            PersistentOp::Deregister {
                ip: "10.0.0.9".into(),
                port: 3306,
                cluster: "DEFAULT".into(),
            },
            now,
        )
        .unwrap();
    f.reg
        .apply_committed(&f.key, PersistentOp::DeleteService, now)
        .unwrap();
    f.reg.flush(now);
    let s = f.reg.stats();
    assert_eq!((s.services, s.healthy, s.unhealthy), (0, 0, 0));
    assert_eq!(f.view.census.total(), 0);
    // The empty-service cleaner keeps the counters too.
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    f.deregister("10.0.0.1");
    f.run_for(2_000);
    assert!(f.view.get(f.key.as_ref()).is_none());
    let s = f.reg.stats();
    assert_eq!((s.services, s.healthy, s.unhealthy), (0, 0, 0));
    assert_eq!(f.view.census.total(), 0);
}

#[test]
fn compaction_waits_for_leases_after_many_removals() {
    let mut f = Fixture::new(Lifecycle::default());
    let now = f.clock.now_ms();
    let n = COMPACT_AFTER_REMOVALS as u32;
    for i in 0..n {
        let k = ServiceKey::new("public", &format!("DEFAULT_GROUP@@c{i}"));
        f.reg
            .apply_committed(
                &k,
                PersistentOp::CreateService {
                    settings: ServiceSettings {
                        protect_threshold: 0.0,
                        metadata: Metadata::new(),
                        selector: serde_json::json!({"type": "none"}),
                    },
                },
                now,
            )
            .unwrap();
    }
    f.reg.flush(now);
    assert!(!f.reg.compact(now), "nothing removed yet");
    for i in 0..n {
        let k = ServiceKey::new("public", &format!("DEFAULT_GROUP@@c{i}"));
        f.reg
            .apply_committed(&k, PersistentOp::DeleteService, now)
            .unwrap();
    }
    f.reg.flush(now);
    let wait = Lifecycle::default().timing.timeout_ms + 1000;
    assert!(
        !f.reg.compact(now),
        "leases of removed instances may still hold memory"
    );
    assert!(!f.reg.compact(now + wait - 1));
    assert!(f.reg.compact(now + wait));
    assert!(!f.reg.compact(now + wait + 1), "once per batch of removals");
    assert!(f.reg.services.capacity() < n as usize);
    assert_eq!(f.view.census.total(), 0);
}

#[test]
fn new_services_over_the_caps_are_refused_with_503() {
    let life = Lifecycle {
        max_services: 3,
        max_services_per_namespace: 2,
        ..Lifecycle::default()
    };
    let mut f = Fixture::new(life);
    let now = f.clock.now_ms();
    let key = |ns: &str, n: u32| ServiceKey::new(ns, &format!("DEFAULT_GROUP@@s{n}"));
    let reg = |f: &mut Fixture, k: &ServiceKey| {
        f.reg
            .apply(k, Write::Register(spec("10.0.0.1", 80)), now)
            .map(|_| ())
    };
    reg(&mut f, &key("a", 1)).unwrap();
    reg(&mut f, &key("a", 2)).unwrap();
    let e = reg(&mut f, &key("a", 3)).unwrap_err();
    assert_eq!(e.status, 503);
    assert!(e.msg.contains("max_services_per_namespace"), "{}", e.msg);
    // Existing services still take writes.
    reg(&mut f, &key("a", 2)).unwrap();
    reg(&mut f, &key("b", 1)).unwrap();
    let e = reg(&mut f, &key("c", 1)).unwrap_err();
    assert_eq!(e.status, 503);
    assert!(e.msg.contains("(max_services)"), "{}", e.msg);
}

#[test]
fn register_publishes_with_increasing_revisions() {
    let mut f = Fixture::new(Lifecycle::default());
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    let r1 = f.view.get(f.key.as_ref()).unwrap().revision;
    f.apply(Write::Register(spec("10.0.0.2", 80))).unwrap();
    let v = f.view.get(f.key.as_ref()).unwrap();
    assert!(v.revision > r1);
    assert_eq!(v.instances.len(), 2);
    assert_eq!(f.reg.stats().healthy, 2);
    assert_eq!(f.reg.stats().services, 1);
}

#[test]
fn missed_beats_turn_unhealthy_at_15s_and_remove_at_30s() {
    let mut f = Fixture::new(Lifecycle::default());
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    f.run_for(14_900);
    assert_eq!(f.health(), Some(true));
    f.run_for(400);
    assert_eq!(f.health(), Some(false), "unhealthy just after 15 s");
    assert_eq!(f.reg.stats().beat_timeouts, 1);
    // A beat brings it back and restarts the lease.
    let r = f.beat("10.0.0.1");
    assert_eq!(
        r,
        Reply::Beat {
            code: BEAT_OK,
            interval_ms: 5000
        }
    );
    assert_eq!(f.health(), Some(true));
    f.run_for(29_800);
    assert_eq!(f.health(), Some(false));
    f.run_for(500);
    assert_eq!(f.health(), None, "removed just after 30 s");
    assert_eq!(f.reg.stats().expired, 1);
    assert_eq!(f.reg.stats().healthy + f.reg.stats().unhealthy, 0);
}

#[test]
fn preserved_metadata_overrides_timeouts_and_interval() {
    let mut f = Fixture::new(Lifecycle::default());
    let mut s = spec("10.0.0.1", 80);
    s.metadata.insert(
        crate::naming::instance::HEART_BEAT_TIMEOUT.into(),
        "1000".into(),
    );
    s.metadata.insert(
        crate::naming::instance::IP_DELETE_TIMEOUT.into(),
        "2000".into(),
    );
    s.metadata.insert(
        crate::naming::instance::HEART_BEAT_INTERVAL.into(),
        "500".into(),
    );
    f.apply(Write::Register(s)).unwrap();
    let r = f.beat("10.0.0.1");
    assert_eq!(
        r,
        Reply::Beat {
            code: BEAT_OK,
            interval_ms: 500
        }
    );
    f.run_for(1_300);
    assert_eq!(f.health(), Some(false));
    f.run_for(1_000);
    assert_eq!(f.health(), None);
}

#[test]
fn expire_off_keeps_unhealthy_instances() {
    let life = Lifecycle {
        expire: false,
        ..Lifecycle::default()
    };
    let mut f = Fixture::new(life);
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    f.run_for(60_000);
    assert_eq!(f.health(), Some(false));
}

#[test]
fn beats_for_unknown_instances() {
    let mut f = Fixture::new(Lifecycle::default());
    let unknown = Write::Beat {
        ip: "10.0.0.9".into(),
        port: 80,
        cluster: "DEFAULT".into(),
        register: None,
    };
    assert_eq!(
        f.apply(unknown).unwrap(),
        Reply::Beat {
            code: BEAT_NOT_FOUND,
            interval_ms: 5000
        }
    );
    assert!(
        f.view.get(f.key.as_ref()).is_none(),
        "a 20404 beat changes nothing"
    );
    let with_json = Write::Beat {
        ip: "10.0.0.9".into(),
        port: 80,
        cluster: "DEFAULT".into(),
        register: Some(spec("10.0.0.9", 80)),
    };
    assert_eq!(
        f.apply(with_json).unwrap(),
        Reply::Beat {
            code: BEAT_OK,
            interval_ms: 5000
        }
    );
    assert_eq!(f.view.get(f.key.as_ref()).unwrap().instances.len(), 1);
}

#[test]
fn strict_update_and_patch_errors_change_nothing() {
    let mut f = Fixture::new(Lifecycle::default());
    let e = f
        .apply(Write::Update {
            spec: spec("10.0.0.1", 80),
            strict: true,
        })
        .unwrap_err();
    assert_eq!(
        e.msg,
        "service not found, namespace: public, service: DEFAULT_GROUP@@orders"
    );
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    let rev = f.view.get(f.key.as_ref()).unwrap().revision;
    let e = f
        .apply(Write::Update {
            spec: spec("10.0.0.2", 80),
            strict: true,
        })
        .unwrap_err();
    assert_eq!(
        e.msg,
        "instance not exist: 10.0.0.2:80:unknown:DEFAULT_1.0_true_false_DEFAULT"
    );
    let e = f
        .apply(Write::Patch(Patch {
            ip: "10.0.0.3".into(),
            port: 80,
            cluster: "DEFAULT".into(),
            ..Patch::default()
        }))
        .unwrap_err();
    assert_eq!((e.status, e.msg.as_str()), (400, "instance not found"));
    assert_eq!(f.view.get(f.key.as_ref()).unwrap().revision, rev);
    // A strict update of an existing instance keeps its health and id, changes weight.
    let mut s = spec("10.0.0.1", 80);
    s.weight = 3.0;
    s.healthy = false;
    f.apply(Write::Update {
        spec: s,
        strict: true,
    })
    .unwrap();
    let v = f.view.get(f.key.as_ref()).unwrap();
    assert_eq!(v.instances.first().unwrap().weight, 3.0);
    assert!(v.instances.first().unwrap().healthy);
}

#[test]
fn committed_ops_upsert_and_mark_services_durable() {
    let life = Lifecycle {
        empty_service_ms: 1_000,
        ..Lifecycle::default()
    };
    let mut f = Fixture::new(life);
    let settings = ServiceSettings {
        protect_threshold: 0.5,
        metadata: Metadata::new(),
        selector: serde_json::json!({"type": "none"}),
    };
    let now = f.clock.now_ms();
    f.reg
        .apply_committed(
            &f.key,
            PersistentOp::CreateService {
                settings: settings.clone(),
            },
            now,
        )
        .unwrap();
    // Replays are idempotent.
    f.reg
        .apply_committed(&f.key, PersistentOp::CreateService { settings }, now)
        .unwrap();
    let mut db = spec("10.0.0.9", 3306);
    db.ephemeral = false;
    f.reg
        .apply_committed(&f.key, PersistentOp::Register { instance: db }, now)
        .unwrap();
    f.reg.flush(now);
    let v = f.view.get(f.key.as_ref()).unwrap();
    assert_eq!(v.meta.protect_threshold, 0.5);
    assert!(!v.instances.first().unwrap().key.ephemeral);
    // Persistent instances never expire; durable services are never auto-cleaned.
    f.run_for(40_000);
    assert_eq!(f.health(), Some(true));
    f.reg
        .apply_committed(
            &f.key,
            PersistentOp::Deregister {
                ip: "10.0.0.9".into(),
                port: 3306,
                cluster: "DEFAULT".into(),
            },
            f.clock.now_ms(),
        )
        .unwrap();
    f.run_for(5_000);
    assert!(
        f.view.get(f.key.as_ref()).is_some(),
        "a durable empty service stays"
    );
    f.reg
        .apply_committed(&f.key, PersistentOp::DeleteService, f.clock.now_ms())
        .unwrap();
    f.reg.flush(f.clock.now_ms());
    assert!(f.view.get(f.key.as_ref()).is_none());
}

#[test]
fn empty_services_are_removed_after_their_ttl() {
    let life = Lifecycle {
        empty_service_ms: 5_000,
        ..Lifecycle::default()
    };
    let mut f = Fixture::new(life);
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    f.deregister("10.0.0.1");
    f.run_for(4_800);
    assert!(f.view.get(f.key.as_ref()).is_some());
    f.run_for(400);
    assert!(f.view.get(f.key.as_ref()).is_none());
    assert_eq!(f.reg.stats().empty_services_removed, 1);
}

#[test]
fn protect_threshold_serves_everyone_as_healthy() {
    let mut f = Fixture::new(Lifecycle::default());
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    f.run_for(15_500);
    let v = f.view.get(f.key.as_ref()).unwrap();
    let q = ListQuery {
        clusters_raw: "",
        clusters: vec![],
        healthy_only: true,
        grouped: false,
        cache_millis: 3000,
        env: "",
        is_check: false,
        now_wall_ms: 1,
    };
    let body: Vec<u8> = v.render_list(&q).unwrap().concat();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["hosts"][0]["healthy"], true,
        "0/1 healthy <= 0.0 threshold"
    );
}

#[test]
fn writes_update_an_unheld_view_in_place_and_leave_a_held_one_alone() {
    let mut f = Fixture::new(Lifecycle::default());
    let q = ListQuery {
        clusters_raw: "",
        clusters: vec![],
        healthy_only: false,
        grouped: false,
        cache_millis: 3000,
        env: "",
        is_check: false,
        now_wall_ms: 1,
    };
    let ips = |v: &ServiceView| -> Vec<String> {
        let body: Vec<u8> = v.render_list(&q).unwrap().concat();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        json["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["ip"].as_str().unwrap().to_string())
            .collect()
    };
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    // A reader holds the view (and has rendered it): the next write may not touch it.
    let held = f.view.get(f.key.as_ref()).unwrap();
    assert_eq!(ips(&held), ["10.0.0.1"]);
    f.apply(Write::Register(spec("10.0.0.2", 80))).unwrap();
    let next = f.view.get(f.key.as_ref()).unwrap();
    assert!(!Arc::ptr_eq(&held, &next), "copy-on-write while held");
    assert_eq!(ips(&held), ["10.0.0.1"], "a held view never changes");
    assert_eq!(held.instances.len(), 1);
    assert_eq!(next.instances.len(), 2);
    assert!(next.revision > held.revision);
    let (r2, ptr) = (next.revision, Arc::as_ptr(&next));
    drop((held, next));
    // Nobody holds it now: the write lands in the published view itself, visible before
    // any flush, with a new revision and no stale rendering.
    let now = f.clock.now_ms();
    f.reg
        .apply(&f.key, Write::Register(spec("10.0.0.3", 80)), now)
        .unwrap();
    let v = f.view.get(f.key.as_ref()).unwrap();
    assert_eq!(Arc::as_ptr(&v), ptr, "updated in place");
    assert!(v.revision > r2);
    assert_eq!(v.instances.len(), 3);
    let rendered = ips(&v);
    assert_eq!(rendered.len(), 3, "{rendered:?}");
    drop(v);
    // The flush after it publishes nothing new, and says the service changed (for push).
    let changed = f.reg.flush(now);
    assert_eq!(changed, vec![f.key.clone()]);
    let v = f.view.get(f.key.as_ref()).unwrap();
    assert_eq!(Arc::as_ptr(&v), ptr);
    assert_eq!(f.reg.stats().healthy, 3);
    // A write that changes nothing (an identical re-register) keeps the revision and the
    // cached rendering.
    let rev = v.revision;
    drop(v);
    f.apply(Write::Register(spec("10.0.0.3", 80))).unwrap();
    let v = f.view.get(f.key.as_ref()).unwrap();
    assert_eq!(v.revision, rev);
    assert_eq!(ips(&v).len(), 3);
    // Deregistering in place drops the instance from the view at once.
    drop(v);
    f.deregister("10.0.0.1");
    let v = f.view.get(f.key.as_ref()).unwrap();
    assert_eq!(Arc::as_ptr(&v), ptr);
    let mut left = ips(&v);
    left.sort();
    assert_eq!(left, ["10.0.0.2", "10.0.0.3"]);
}

#[test]
fn readers_on_other_threads_see_whole_revisions_while_writes_land_in_place() {
    let mut f = Fixture::new(Lifecycle::default());
    f.apply(Write::Register(spec("10.1.0.0", 80))).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (view, key) = (f.view.clone(), f.key.clone());
            let (stop, started) = (stop.clone(), started.clone());
            std::thread::spawn(move || {
                let mut last = (0, 0);
                let mut seen = 0u64;
                // Bounded: at most 2 M looks; stops once the writer is done.
                for _ in 0..2_000_000 {
                    let v = view.get(key.as_ref()).expect("published");
                    // Each write adds one instance: a revision shows all of them, whole.
                    let n = v.instances.len();
                    assert_eq!(v.instances.iter().count(), n);
                    assert!(
                        (v.revision, n) >= last,
                        "went back: {last:?} -> {:?}",
                        (v.revision, n)
                    );
                    last = (v.revision, n);
                    seen += 1;
                    if seen == 1 {
                        started.fetch_add(1, Ordering::SeqCst);
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                seen
            })
        })
        .collect();
    // Write only once both readers are looking (bounded wait: 10 s).
    let t0 = std::time::Instant::now();
    while started.load(Ordering::SeqCst) < 2 && t0.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::yield_now();
    }
    for i in 1..3000u32 {
        let ip = format!("10.1.{}.{}", i / 256, i % 256);
        f.apply(Write::Register(spec(&ip, 80))).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader panicked") > 0);
    }
    let v = f.view.get(f.key.as_ref()).unwrap();
    assert_eq!(v.instances.len(), 3000);
    assert_eq!(v.instances.iter().count(), 3000);
}

#[test]
fn a_restore_equals_the_committed_ops_it_stands_for() {
    let settings = ServiceSettings {
        protect_threshold: 0.25,
        metadata: Metadata::new(),
        selector: serde_json::json!({"type": "none"}),
    };
    let meta = ClusterMeta {
        check_port: 9,
        ..ClusterMeta::default()
    };
    let specs: Vec<Arc<InstanceSpec>> = (0..40)
        .map(|i| {
            let mut s = spec(&format!("10.0.1.{i}"), 3306);
            s.ephemeral = false;
            s.weight = f64::from(i % 5 + 1);
            s.healthy = i % 7 != 0;
            if i % 3 == 0 {
                s.cluster = "c1".into();
            }
            if i % 4 == 0 {
                s.metadata.insert("zone".into(), format!("z{i}"));
            }
            if i == 5 {
                s.metadata.insert(
                    crate::naming::instance::INSTANCE_ID_GENERATOR.into(),
                    "snowflake".into(),
                );
            }
            Arc::new(s)
        })
        .collect();
    let mut restored = Fixture::new(Lifecycle::default());
    let now = restored.clock.now_ms();
    let r = Restore {
        settings: Some(settings.clone()),
        clusters: vec![("c1".into(), meta.clone())],
        instances: specs.clone(),
    };
    restored.reg.restore(&restored.key, r, now);
    restored.reg.flush(now);
    let mut replayed = Fixture::new(Lifecycle::default());
    let key = replayed.key.clone();
    replayed
        .reg
        .apply_committed(&key, PersistentOp::CreateService { settings }, now)
        .unwrap();
    replayed
        .reg
        .apply_committed(
            &key,
            PersistentOp::UpdateCluster {
                cluster: "c1".into(),
                meta,
            },
            now,
        )
        .unwrap();
    for s in &specs {
        let op = PersistentOp::Register {
            instance: (**s).clone(),
        };
        replayed.reg.apply_committed(&key, op, now).unwrap();
    }
    replayed.reg.flush(now);
    let seen = |f: &Fixture| {
        let v = f.view.get(f.key.as_ref()).unwrap();
        let mut clusters: Vec<_> = v
            .meta
            .clusters
            .iter()
            .map(|(n, m)| (n.to_string(), m.check_port))
            .collect();
        clusters.sort();
        let mut insts: Vec<_> = v
            .instances
            .iter()
            .map(|i| {
                (
                    i.key.ip.to_string(),
                    i.key.cluster.to_string(),
                    i.weight,
                    i.healthy,
                    i.key.ephemeral,
                    i.metadata
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>(),
                    i.instance_id(&f.key.grouped).to_string(),
                )
            })
            .collect();
        insts.sort_by(|a, b| a.0.cmp(&b.0));
        (
            v.meta.protect_threshold,
            clusters,
            insts,
            v.instances.healthy(),
        )
    };
    assert_eq!(seen(&restored), seen(&replayed));
    assert_eq!(seen(&restored).2.len(), 40);
    assert_eq!(restored.reg.take_new_persistent(100).len(), 40);
    assert_eq!(replayed.reg.take_new_persistent(100).len(), 40);
    // Restored services are durable: empty, they are never cleaned away.
    assert!(restored.reg.services.get(&restored.key).unwrap().durable);
}

#[test]
fn snowflake_ids_fill_the_smallest_gap() {
    let mut f = Fixture::new(Lifecycle::default());
    for i in 1..=3 {
        let mut s = spec(&format!("10.0.0.{i}"), 80);
        s.metadata.insert(
            crate::naming::instance::INSTANCE_ID_GENERATOR.into(),
            "snowflake".into(),
        );
        f.apply(Write::Register(s)).unwrap();
    }
    let mut ids: Vec<(String, String)> = f
        .view
        .get(f.key.as_ref())
        .unwrap()
        .instances
        .iter()
        .map(|i| {
            (
                i.key.ip.to_string(),
                i.instance_id(&f.key.grouped).to_string(),
            )
        })
        .collect();
    ids.sort();
    let want = [("10.0.0.1", "0"), ("10.0.0.2", "1"), ("10.0.0.3", "2")];
    assert_eq!(ids, want.map(|(a, b)| (a.to_string(), b.to_string())));
}

#[test]
fn batch_metadata_reports_datum_keys() {
    let mut f = Fixture::new(Lifecycle::default());
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    let mut md = Metadata::new();
    md.insert("zone".into(), "a".into());
    let r = f
        .apply(Write::BatchMetadata {
            targets: None,
            durability: Durability::Ephemeral,
            metadata: md,
            delete: false,
        })
        .unwrap();
    assert_eq!(
        r,
        Reply::Updated(vec!["10.0.0.1:80:unknown:DEFAULT:ephemeral".into()])
    );
    let v = f.view.get(f.key.as_ref()).unwrap();
    assert_eq!(v.instances.first().unwrap().metadata["zone"], "a");
    // The copy keeps the lease: beats keep it, and without beats it still expires.
    f.run_for(10_000);
    f.beat("10.0.0.1");
    f.run_for(10_000);
    assert_eq!(f.health(), Some(true));
    f.run_for(31_000);
    assert_eq!(f.health(), None);
    assert_eq!(f.reg.stats().expired, 1);
}

#[test]
fn an_unchanged_re_register_only_renews_the_lease() {
    let mut f = Fixture::new(Lifecycle::default());
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    let r1 = f.view.get(f.key.as_ref()).unwrap().revision;
    let leases = f.reg.lease_count();
    f.run_for(10_000);
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    assert_eq!(f.view.get(f.key.as_ref()).unwrap().revision, r1);
    assert_eq!(f.reg.lease_count(), leases);
    // The lease was renewed: 10 s + 10 s is past the 15 s timeout of the first registration.
    f.run_for(10_000);
    assert_eq!(f.health(), Some(true));
    // A changed weight is a change.
    let mut heavier = spec("10.0.0.1", 80);
    heavier.weight = 2.0;
    f.apply(Write::Register(heavier)).unwrap();
    assert!(f.view.get(f.key.as_ref()).unwrap().revision > r1);
}

#[test]
fn beats_do_not_publish_but_health_flips_do() {
    let mut f = Fixture::new(Lifecycle::default());
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    let r1 = f.view.get(f.key.as_ref()).unwrap().revision;
    f.beat("10.0.0.1");
    assert_eq!(f.view.get(f.key.as_ref()).unwrap().revision, r1);
    f.run_for(16_000);
    assert_eq!(f.health(), Some(false));
    let r2 = f.view.get(f.key.as_ref()).unwrap().revision;
    assert!(r2 > r1);
    f.beat("10.0.0.1");
    assert_eq!(f.health(), Some(true));
    assert!(f.view.get(f.key.as_ref()).unwrap().revision > r2);
}

fn settings() -> ServiceSettings {
    ServiceSettings {
        protect_threshold: 0.0,
        metadata: Metadata::new(),
        selector: serde_json::json!({"type": "none"}),
    }
}

fn persistent(ip: &str, port: u16) -> InstanceSpec {
    InstanceSpec {
        ephemeral: false,
        ..InstanceSpec::new(ip, port)
    }
}

/// The outcome of a write that re-registers `instance` through raft, answering `reply`.
fn register_then(instance: InstanceSpec, reply: Reply) -> Outcome {
    Outcome::Propose {
        ops: vec![PersistentOp::Register { instance }],
        reply,
    }
}

fn instances(f: &Fixture) -> Vec<(String, u16, bool)> {
    let Some(v) = f.view.get(f.key.as_ref()) else {
        return Vec::new();
    };
    let mut out: Vec<_> = v
        .instances
        .iter()
        .map(|i| (i.key.ip.to_string(), i.key.port, i.key.ephemeral))
        .collect();
    out.sort();
    out
}

#[test]
fn a_persistent_register_is_proposed_and_changes_nothing_until_committed() {
    let mut f = Fixture::new(Lifecycle::default());
    let out = f
        .plan(Write::Register(persistent("10.0.0.9", 3306)))
        .unwrap();
    assert_eq!(out, register_then(persistent("10.0.0.9", 3306), Reply::Ok));
    assert!(instances(&f).is_empty(), "nothing applied before commit");
    // An ephemeral one is applied at once.
    let out = f.plan(Write::Register(spec("10.0.0.1", 80))).unwrap();
    assert_eq!(out, Outcome::Applied(Reply::Ok));
    assert_eq!(instances(&f), vec![("10.0.0.1".into(), 80, true)]);
}

#[test]
fn strict_update_checks_the_owner_state_for_either_kind() {
    let mut f = Fixture::new(Lifecycle::default());
    let strict = |s: InstanceSpec| Write::Update {
        spec: s,
        strict: true,
    };
    let e = f.plan(strict(persistent("10.0.0.9", 3306))).unwrap_err();
    assert_eq!(e.status, 500);
    assert!(e.msg.contains("service not found"), "{}", e.msg);
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    // The service exists, the persistent instance does not: refused, nothing proposed.
    let e = f.plan(strict(persistent("10.0.0.1", 80))).unwrap_err();
    assert!(e.msg.contains("instance not exist"), "{}", e.msg);
    f.apply(Write::Register(persistent("10.0.0.9", 3306)))
        .unwrap();
    let mut changed = persistent("10.0.0.9", 3306);
    changed.weight = 3.0;
    let out = f.plan(strict(changed.clone())).unwrap();
    assert_eq!(
        out,
        Outcome::Propose {
            ops: vec![PersistentOp::Register { instance: changed }],
            reply: Reply::Ok,
        }
    );
}

#[test]
fn a_patch_of_a_persistent_instance_proposes_the_merged_instance() {
    let mut f = Fixture::new(Lifecycle::default());
    let mut base = persistent("10.0.0.9", 3306);
    base.metadata.insert("role".into(), "primary".into());
    base.app = "db".into();
    f.apply(Write::Register(base.clone())).unwrap();
    let out = f
        .plan(Write::Patch(Patch {
            ip: "10.0.0.9".into(),
            port: 3306,
            cluster: "DEFAULT".into(),
            weight: Some(2.5),
            ..Patch::default()
        }))
        .unwrap();
    let mut merged = base;
    merged.weight = 2.5;
    assert_eq!(
        out,
        Outcome::Propose {
            ops: vec![PersistentOp::Register { instance: merged }],
            reply: Reply::Ok,
        }
    );
    // A bad merge is refused on the owner before anything is proposed.
    let e = f
        .plan(Write::Patch(Patch {
            ip: "10.0.0.9".into(),
            port: 3306,
            cluster: "DEFAULT".into(),
            weight: Some(-1.0),
            ..Patch::default()
        }))
        .unwrap_err();
    assert_eq!(e.status, 400, "{}", e.msg);
}

#[test]
fn a_mixed_metadata_batch_applies_ephemeral_now_and_proposes_persistent() {
    let mut f = Fixture::new(Lifecycle::default());
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    f.apply(Write::Register(persistent("10.0.0.9", 3306)))
        .unwrap();
    let mut md = Metadata::new();
    md.insert("zone".into(), "b".into());
    let targets = vec![
        Target {
            ip: "10.0.0.1".into(),
            port: 80,
            cluster: Some("DEFAULT".into()),
            durability: Durability::Ephemeral,
        },
        Target {
            ip: "10.0.0.9".into(),
            port: 3306,
            cluster: Some("DEFAULT".into()),
            durability: Durability::Persistent,
        },
    ];
    let out = f
        .plan(Write::BatchMetadata {
            targets: Some(targets),
            durability: Durability::Ephemeral,
            metadata: md,
            delete: false,
        })
        .unwrap();
    let Outcome::Propose { ops, reply } = out else {
        panic!("a persistent target must be proposed: {out:?}");
    };
    assert_eq!(
        reply,
        Reply::Updated(vec![
            "10.0.0.9:3306:unknown:DEFAULT:persist".into(),
            "10.0.0.1:80:unknown:DEFAULT:ephemeral".into(),
        ])
    );
    let [PersistentOp::Register { instance }] = ops.as_slice() else {
        panic!("one re-register: {ops:?}");
    };
    assert_eq!(instance.metadata.get("zone").map(String::as_str), Some("b"));
    let v = f.view.get(f.key.as_ref()).unwrap();
    for i in v.instances.iter() {
        let zone = i.metadata.get("zone").map(String::as_str);
        // The ephemeral one changed at once; the persistent one waits for its commit.
        assert_eq!(zone, i.key.ephemeral.then_some("b"), "{:?}", i.key);
    }
}

#[test]
fn a_persistent_deregister_of_nothing_writes_no_log_entry() {
    let mut f = Fixture::new(Lifecycle::default());
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    let dereg = |ip: &str| Write::Deregister {
        ip: ip.into(),
        port: 3306,
        cluster: "DEFAULT".into(),
        durability: Durability::Persistent,
    };
    assert_eq!(
        f.plan(dereg("10.0.0.9")).unwrap(),
        Outcome::Applied(Reply::Ok)
    );
    f.apply(Write::Register(persistent("10.0.0.9", 3306)))
        .unwrap();
    assert!(matches!(
        f.plan(dereg("10.0.0.9")).unwrap(),
        Outcome::Propose { .. }
    ));
    f.apply(dereg("10.0.0.9")).unwrap();
    assert_eq!(instances(&f), vec![("10.0.0.1".into(), 80, true)]);
}

#[test]
fn service_writes_check_existence_on_the_owner() {
    let mut f = Fixture::new(Lifecycle::default());
    let e = f.plan(Write::UpdateService(settings())).unwrap_err();
    assert_eq!((e.status, e.msg.contains("not found!")), (500, true));
    let e = f.plan(Write::DeleteService).unwrap_err();
    assert_eq!((e.status, e.msg.contains("not exist")), (400, true));
    let e = f
        .plan(Write::UpdateCluster {
            cluster: "c1".into(),
            meta: ClusterMeta::default(),
        })
        .unwrap_err();
    assert_eq!(
        (e.status, e.msg.contains("service not found:")),
        (500, true)
    );
    f.apply(Write::CreateService(settings())).unwrap();
    let e = f.plan(Write::CreateService(settings())).unwrap_err();
    assert_eq!((e.status, e.msg.contains("already exists")), (400, true));
    f.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    let e = f.plan(Write::DeleteService).unwrap_err();
    assert_eq!(e, has_instances(&f.key));
    f.deregister("10.0.0.1");
    assert_eq!(
        f.plan(Write::DeleteService).unwrap(),
        Outcome::Propose {
            ops: vec![PersistentOp::DeleteService],
            reply: Reply::Ok
        }
    );
}

#[test]
fn a_beat_that_registers_a_persistent_instance_proposes_it_and_answers_ok() {
    let mut f = Fixture::new(Lifecycle::default());
    let out = f
        .plan(Write::Beat {
            ip: "10.0.0.9".into(),
            port: 3306,
            cluster: "DEFAULT".into(),
            register: Some(persistent("10.0.0.9", 3306)),
        })
        .unwrap();
    assert_eq!(
        out,
        register_then(
            persistent("10.0.0.9", 3306),
            Reply::Beat {
                code: BEAT_OK,
                interval_ms: Timing::default().interval_ms,
            }
        )
    );
}

/// Registers `n` ephemeral instances `10.0.1.i:80` in the fixture's service.
fn register_many(f: &mut Fixture, n: u8) {
    for i in 0..n {
        f.apply(Write::Register(spec(&format!("10.0.1.{i}"), 80)))
            .unwrap();
    }
}

/// Beats `10.0.1.i:80` for every `i` in `ips`, every second, for `ms`.
fn beat_for(f: &mut Fixture, ips: std::ops::Range<u8>, ms: u64) {
    for _ in 0..ms / 1000 {
        for i in ips.clone() {
            let r = f.apply(Write::Beat {
                ip: format!("10.0.1.{i}"),
                port: 80,
                cluster: "DEFAULT".into(),
                register: None,
            });
            assert!(matches!(r, Ok(Reply::Beat { code: BEAT_OK, .. })));
        }
        f.run_for(1000);
    }
}

#[test]
fn the_mass_expiry_guard_holds_removals_until_beats_return() {
    let mut f = Fixture::new(Lifecycle::default());
    register_many(&mut f, 20);
    // 16 of 20 (80%) go quiet at once; 4 keep beating. Well past the 30 s delete timeout,
    // nothing is removed: the quiet ones are unhealthy, and the guard is on.
    beat_for(&mut f, 16..20, 45_000);
    let s = f.reg.stats();
    assert_eq!((s.ephemeral, s.ephemeral_sick), (20, 16));
    assert!(s.expiry_paused(50));
    assert_eq!(s.expired, 0);
    assert!(s.expiry_deferred >= 16, "{s:?}");
    assert_eq!(f.view.get(f.key.as_ref()).unwrap().instances.len(), 20);
    // Beats come back for all of them: healthy again, guard off, nothing lost.
    beat_for(&mut f, 0..20, 2_000);
    let s = f.reg.stats();
    assert_eq!((s.ephemeral_sick, s.expired), (0, 0));
    assert!(!s.expiry_paused(50));
    assert_eq!(f.view.get(f.key.as_ref()).unwrap().instances.len(), 20);
}

#[test]
fn the_guard_lets_a_minority_and_small_groups_expire_and_can_be_switched_off() {
    // 8 of 20 quiet (40%, under 50%): removed as usual.
    let mut f = Fixture::new(Lifecycle::default());
    register_many(&mut f, 20);
    beat_for(&mut f, 8..20, 45_000);
    assert_eq!(f.reg.stats().expired, 8);
    // All of 5 quiet: 100%, but fewer than GUARD_MIN_SICK: removed.
    let mut f = Fixture::new(Lifecycle::default());
    register_many(&mut f, 5);
    f.run_for(45_000);
    assert_eq!(f.reg.stats().expired, 5);
    // 16 of 20 with the guard off: removed.
    let mut f = Fixture::new(Lifecycle {
        expiry_guard_percent: 0,
        ..Lifecycle::default()
    });
    register_many(&mut f, 20);
    beat_for(&mut f, 16..20, 45_000);
    let s = f.reg.stats();
    assert_eq!((s.expired, s.expiry_deferred), (16, 0));
}

fn replica(f: &Fixture, version: u64, ips: &[&str]) -> Replica {
    Replica {
        namespace: f.key.namespace.to_string(),
        grouped: f.key.grouped.to_string(),
        version,
        instances: ips.iter().map(|ip| spec(ip, 80)).collect(),
        stamps: Vec::new(),
        tombs: Vec::new(),
    }
}

fn listed_ips(f: &Fixture) -> Vec<String> {
    instances(f).into_iter().map(|(ip, _, _)| ip).collect()
}

#[test]
fn replicas_apply_by_version_only() {
    let mut f = Fixture::new(Lifecycle::default());
    let now = f.clock.now_ms();
    assert!(f
        .reg
        .apply_replica(replica(&f, 2, &["10.0.0.1", "10.0.0.2"]), now));
    f.reg.flush(now);
    assert_eq!(listed_ips(&f), ["10.0.0.1", "10.0.0.2"]);
    // An older or equal version changes nothing; a newer one replaces the set exactly.
    assert!(!f.reg.apply_replica(replica(&f, 2, &["10.0.0.9"]), now));
    assert!(!f.reg.apply_replica(replica(&f, 1, &[]), now));
    assert!(f
        .reg
        .apply_replica(replica(&f, 3, &["10.0.0.2", "10.0.0.3"]), now));
    f.reg.flush(now);
    assert_eq!(listed_ips(&f), ["10.0.0.2", "10.0.0.3"]);
    // A member holding a replica sends none of its own.
    assert_eq!(f.reg.replica_now(&f.key.clone(), f.clock.now_ms()), None);
}

#[test]
fn a_replica_is_not_expired_here_until_this_member_is_responsible() {
    let mut f = Fixture::new(Lifecycle::default());
    f.reg.set_distro(true);
    let now = f.clock.now_ms();
    f.reg.apply_replica(replica(&f, 1, &["10.0.0.1"]), now);
    f.reg.flush(now);
    // No beats arrive here (they go to the responsible member): nothing changes for a minute.
    for _ in 0..600 {
        f.clock.advance(100);
        let now = f.clock.now_ms();
        f.reg.tick_with(now, &|_| false);
        f.reg.flush(now);
    }
    assert_eq!(f.health(), Some(true));
    assert_eq!(f.reg.stats().expired, 0);
    // This member becomes responsible: it adopts the instance with a fresh lease, so it turns
    // unhealthy only a full timeout later, and is removed after the delete timeout.
    let adopted_at = f.clock.now_ms();
    let mut unhealthy_at = None;
    for _ in 0..400 {
        f.clock.advance(100);
        let now = f.clock.now_ms();
        f.reg.tick_with(now, &|_| true);
        f.reg.flush(now);
        if unhealthy_at.is_none() && f.health() == Some(false) {
            unhealthy_at = Some(now);
        }
    }
    let t = Timing::default();
    let after = unhealthy_at.expect("turned unhealthy") - adopted_at;
    assert!(after > t.timeout_ms, "unhealthy {after} ms after adoption");
    assert_eq!(f.reg.stats().expired, 1);
    // Its own changes now go out as replicas, under a higher version.
    f.apply(Write::Register(spec("10.0.0.5", 80))).unwrap();
    let r = f.reg.replica_now(&f.key.clone(), f.clock.now_ms()).unwrap();
    // Each published change (unhealthy, removed, registered) bumped it past the replica's.
    assert_eq!(r.version, 4);
    assert_eq!(r.instances.len(), 1);
}

/// A member in a cluster (Distro on), for the merge tests.
fn member() -> Fixture {
    let mut f = Fixture::new(Lifecycle::default());
    f.reg.set_distro(true);
    f
}

/// `from`'s copy, as it sends it (stamps and tombstones included).
fn copy_of(from: &Fixture) -> Replica {
    from.reg
        .replica_now(&from.key, from.clock.now_ms())
        .expect("an own copy")
}

#[test]
fn a_healed_partition_merges_both_sides_writes_instance_by_instance() {
    // A is responsible; C holds A's replica.
    let mut a = member();
    let mut c = member();
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        a.apply(Write::Register(spec(ip, 80))).unwrap();
    }
    let now = c.clock.now_ms();
    assert_eq!(
        c.reg.receive_replica(copy_of(&a), false, now),
        Received::Applied
    );
    c.reg.flush(now);
    // Partition: C is cut off and becomes responsible on its side; both sides take writes.
    c.apply(Write::Register(spec("10.0.0.4", 80))).unwrap();
    c.deregister("10.0.0.2");
    a.apply(Write::Register(spec("10.0.0.5", 80))).unwrap();
    a.deregister("10.0.0.3");
    // C's side has taken more writes (a higher version) than A's: version order alone would
    // throw away one side's writes.
    c.apply(Write::Register(spec("10.0.0.6", 80))).unwrap();
    c.deregister("10.0.0.6");
    // Heal: A is responsible again. C still holds its own copy, so A's replicas do not
    // replace it...
    let now = c.clock.now_ms();
    assert_eq!(
        c.reg.receive_replica(copy_of(&a), false, now),
        Received::Kept
    );
    // ...until C hands it over and A merges it.
    let handed = c.reg.handovers(&|_| false, now);
    assert_eq!(handed.len(), 1);
    let version = handed[0].version;
    assert!(a
        .reg
        .merge_replica(handed[0].clone(), true, a.clock.now_ms()));
    a.reg.flush(a.clock.now_ms());
    c.reg.release(&c.key.clone(), version);
    let merged = copy_of(&a);
    assert!(
        merged.version > version,
        "the merge moved past both sides' versions"
    );
    assert_eq!(c.reg.receive_replica(merged, false, now), Received::Applied);
    c.reg.flush(now);
    // Every registration survived; each side's deregistration holds on the other.
    let want = ["10.0.0.1", "10.0.0.4", "10.0.0.5"];
    assert_eq!(listed_ips(&a), want);
    assert_eq!(listed_ips(&c), want);
    assert_eq!(
        a.view.get(a.key.as_ref()).unwrap().distro_digest(),
        c.view.get(c.key.as_ref()).unwrap().distro_digest(),
        "both hold the same copy"
    );
}

#[test]
fn a_merge_keeps_an_instance_the_other_side_only_expired_and_a_newer_registration() {
    let mut a = member();
    let mut c = member();
    a.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    a.apply(Write::Register(spec("10.0.0.2", 80))).unwrap();
    let now = c.clock.now_ms();
    c.reg.receive_replica(copy_of(&a), false, now);
    c.reg.flush(now);
    // C's side: nothing beats it (the clients beat A), so after adopting it C expires both.
    c.run_for(60_000);
    assert_eq!(listed_ips(&c), Vec::<String>::new());
    // A's side deregistered .2 and registered it again later.
    a.deregister("10.0.0.2");
    a.apply(Write::Register(spec("10.0.0.2", 80))).unwrap();
    // C's copy carries no tombstone for an expiry; A's newer registration stands.
    let now = a.clock.now_ms();
    a.reg.merge_replica(copy_of(&c), true, now);
    a.reg.flush(now);
    assert_eq!(listed_ips(&a), ["10.0.0.1", "10.0.0.2"]);
}

#[test]
fn a_responsible_member_merges_a_stale_replica_without_resurrecting_a_deregistration() {
    let mut a = member();
    a.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    a.apply(Write::Register(spec("10.0.0.2", 80))).unwrap();
    let stale = copy_of(&a);
    a.deregister("10.0.0.2");
    // A replica from before the deregistration arrives late (sent by a member that briefly
    // thought it was responsible): nothing comes back, and nothing is published.
    let now = a.clock.now_ms();
    assert_eq!(a.reg.receive_replica(stale, true, now), Received::Kept);
    assert_eq!(a.reg.flush(now), Vec::<ServiceKey>::new());
    assert_eq!(listed_ips(&a), ["10.0.0.1"]);
}

/// In a cluster every member applies the same committed ops from the log, so a service changed
/// only by them keeps its Distro version and is not replicated: a bump would make a member
/// that is not responsible refuse the responsible member's next replica. A local ephemeral
/// change in the same flush still bumps it.
#[test]
fn committed_ops_alone_do_not_move_the_distro_version() {
    let mut f = member();
    let now = f.clock.now_ms();
    f.reg
        .apply_committed(
            &f.key,
            PersistentOp::Register {
                instance: persistent("10.0.0.9", 3306),
            },
            now,
        )
        .unwrap();
    f.reg.flush(now);
    assert!(f.reg.flushed_by_raft_only(&f.key));
    assert_eq!(f.view.get(f.key.as_ref()).unwrap().version, 0);
    assert_eq!(f.view.get(f.key.as_ref()).unwrap().instances.len(), 1);
    // A replica from the responsible member with version 1 is still taken.
    f.reg.apply_replica(replica(&f, 1, &["10.0.0.1"]), now);
    f.reg.flush(now);
    let v = f.view.get(f.key.as_ref()).unwrap();
    assert_eq!(
        v.instances.len(),
        2,
        "the persistent instance and the replica's"
    );
    // An ephemeral write here and a committed op in the same flush: a local change, bumped.
    let mut g = member();
    g.reg
        .apply_committed(
            &g.key,
            PersistentOp::Register {
                instance: persistent("10.0.0.9", 3306),
            },
            now,
        )
        .unwrap();
    assert!(g
        .reg
        .apply(&g.key, Write::Register(spec("10.0.0.2", 80)), now)
        .is_ok());
    g.reg.flush(now);
    assert!(!g.reg.flushed_by_raft_only(&g.key));
    assert_eq!(g.view.get(g.key.as_ref()).unwrap().version, 1);
}

/// In a cluster this member's copy may lag the log: a persistent deregister of an instance it
/// does not hold (yet) is still proposed, so its `ok` takes its place in the log's order.
/// Standalone the copy is the applied state, and nothing is logged.
#[test]
fn a_persistent_deregister_of_an_unknown_instance_is_logged_in_a_cluster() {
    let deregister = || Write::Deregister {
        ip: "10.0.0.9".into(),
        port: 3306,
        cluster: "DEFAULT".into(),
        durability: Durability::Persistent,
    };
    let mut solo = Fixture::new(Lifecycle::default());
    assert!(matches!(
        solo.plan(deregister()),
        Ok(Outcome::Applied(Reply::Ok))
    ));
    let mut m = member();
    assert!(matches!(m.plan(deregister()), Ok(Outcome::Propose { .. })));
    m.apply(Write::Register(spec("10.0.0.1", 80))).unwrap();
    assert!(matches!(m.plan(deregister()), Ok(Outcome::Propose { .. })));
}
