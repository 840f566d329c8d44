//! Leases of ephemeral instances: beats stamp them, the wheel brings each due, and an
//! instance without beats turns unhealthy, then is removed; empty services are removed after
//! their TTL.

use super::*;

impl Registry {
    /// Runs lease deadlines up to `now` (ms): instances without a beat for their timeout turn
    /// unhealthy, and after their delete timeout are removed; long-empty services are removed.
    pub fn tick(&mut self, now: u64) {
        self.tick_with(now, &|_| true);
    }

    /// [`Registry::tick`] in a cluster: `responsible` says whether this member is responsible
    /// for a service. The leases of a service this member is not responsible for are not
    /// checked (its responsible member does that and replicates the result; the beats go
    /// there). Once this member is responsible for a replica it holds, it adopts it, and every
    /// instance starts a fresh lease.
    pub fn tick_with(&mut self, now: u64, responsible: &dyn Fn(&ServiceKey) -> bool) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(now, &mut due);
        for lease in due.drain(..) {
            match lease {
                Lease::Instance { service, inst } => {
                    if let Some(key) = self.ids.keys.get(&service) {
                        if !responsible(key) {
                            let next = now + inst.timing().timeout_ms.max(1);
                            self.wheel.schedule(next, Lease::Instance { service, inst });
                            continue;
                        }
                        let key = key.clone();
                        self.adopt(&key, now);
                    }
                    self.check_lease(service, inst, now)
                }
                Lease::EmptyService { service } => self.check_empty(service, now),
            }
        }
        self.due = due;
    }

    pub(super) fn check_lease(&mut self, sid: u32, lease: Arc<Instance>, now: u64) {
        let expire = self.life.expire;
        let Some(service) = self.ids.keys.get(&sid) else {
            return;
        };
        let Some(svc) = self.services.get_mut(service) else {
            return;
        };
        let Some(cur) = svc.instances.get(&lease.key) else {
            return;
        };
        if cur.gen != lease.gen {
            return;
        }
        let t = cur.timing();
        let last_beat = cur.last_beat();
        let idle = now.saturating_sub(last_beat);
        let next;
        let mut keep = cur.clone();
        if expire && idle > t.delete_ms && self.stats.expiry_paused(self.life.expiry_guard_percent)
        {
            // The mass-expiry guard: too many went quiet at once (more likely the network
            // than the clients). Keep it, unhealthy, and look again in a timeout.
            self.stats.expiry_deferred += 1;
            next = now + t.timeout_ms.max(1);
        } else if expire && idle > t.delete_ms {
            svc.instances.remove(&lease.key);
            if let Some(ledger) = svc.ledger.as_mut() {
                ledger.forget(&lease.key);
            }
            self.stats.expired += 1;
            Self::touch(&mut self.revisions, &mut self.dirty, service, svc);
            return;
        } else if idle > t.timeout_ms && cur.healthy && !cur.marked {
            keep = Arc::new(cur.with_health(false));
            svc.instances.insert(keep.clone());
            self.stats.beat_timeouts += 1;
            next = last_beat + t.delete_ms + 1;
            Self::touch(&mut self.revisions, &mut self.dirty, service, svc);
        } else if cur.healthy || !expire {
            next = (last_beat + t.timeout_ms + 1)
                .max(now + t.timeout_ms.max(1) * u64::from(!cur.healthy));
        } else {
            next = last_beat + t.delete_ms + 1;
        }
        self.wheel.schedule(
            next,
            Lease::Instance {
                service: sid,
                inst: keep,
            },
        );
    }

    pub(super) fn check_empty(&mut self, sid: u32, now: u64) {
        let limit = self.life.empty_service_ms;
        let Some(service) = self.ids.keys.get(&sid) else {
            return;
        };
        let Some(svc) = self.services.get(service) else {
            return;
        };
        match svc.empty_since {
            _ if svc.durable => {}
            Some(since) if svc.instances.is_empty() && now.saturating_sub(since) >= limit => {
                let service = service.clone();
                self.drop_service(&service);
                self.stats.empty_services_removed += 1;
            }
            Some(since) if svc.instances.is_empty() => {
                self.wheel
                    .schedule(since + limit, Lease::EmptyService { service: sid });
            }
            _ => {}
        }
    }

    pub(super) fn beat(
        &mut self,
        key: &ServiceKey,
        ip: &str,
        port: u16,
        cluster: &str,
        register: Option<InstanceSpec>,
        now: u64,
    ) -> Outcome {
        let default_interval = self.life.timing.interval_ms;
        let found = self
            .services
            .get_mut(key)
            .and_then(|svc| Some((svc.instances.find_any(ip, port, cluster)?.clone(), svc)));
        let interval = match found {
            Some((inst, svc)) => {
                let interval = interval_of(&inst, default_interval);
                if inst.key.ephemeral {
                    inst.last_beat.store(now, Ordering::Relaxed);
                    if !inst.healthy && !inst.marked {
                        svc.instances.insert(Arc::new(inst.with_health(true)));
                        Self::touch(&mut self.revisions, &mut self.dirty, key, svc);
                    }
                }
                interval
            }
            None => match register {
                None => {
                    return Outcome::Applied(Reply::Beat {
                        code: BEAT_NOT_FOUND,
                        interval_ms: default_interval,
                    })
                }
                Some(spec) => {
                    let interval = if spec
                        .metadata
                        .contains_key(crate::naming::instance::HEART_BEAT_INTERVAL)
                    {
                        self.life.timing.with_overrides(&spec.metadata).interval_ms
                    } else {
                        default_interval
                    };
                    let reply = Reply::Beat {
                        code: BEAT_OK,
                        interval_ms: interval,
                    };
                    // A beat that registers a persistent instance goes through raft; the
                    // beat itself is then a no-op (beats do not keep persistent instances).
                    if !spec.ephemeral {
                        return Outcome::Propose {
                            ops: vec![PersistentOp::Register { instance: spec }],
                            reply,
                        };
                    }
                    self.upsert(key, &spec, now);
                    return Outcome::Applied(reply);
                }
            },
        };
        Outcome::Applied(Reply::Beat {
            code: BEAT_OK,
            interval_ms: interval,
        })
    }
}

fn interval_of(inst: &Instance, default: u64) -> u64 {
    if inst
        .metadata
        .contains_key(crate::naming::instance::HEART_BEAT_INTERVAL)
    {
        inst.timing().interval_ms
    } else {
        default
    }
}
