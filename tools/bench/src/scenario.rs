//! Nacos 1.x naming request builders and per-scenario workloads.
//!
//! Instances are identified by an index `n`; instance `n` has IP
//! `<octet>.a.b.c` where `a.b.c` encodes `n + 1` (so up to 16.7 M distinct
//! addresses) and a fixed port. The IPs are only strings in the registry.

use crate::engine::{Check, OpSpec, Req, Workload};
use crate::http::{urlencode, Target};

/// Port of the instances that setup phases register and beats/lists target.
pub const POOL_PORT: u16 = 8080;
/// Port of the instances that `mixed` registers and deregisters (churn).
pub const CHURN_PORT: u16 = 9090;

/// Naming API request builder bound to a target and naming parameters.
#[derive(Clone, Debug)]
pub struct Naming {
    /// Where requests go.
    pub target: Target,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Service names are `<prefix>-<j>`.
    pub prefix: String,
    /// First IP octet of generated instances (10 for ephemeral, 127 for persistent).
    pub ip_octet: u8,
    /// `ephemeral` query parameter for register/deregister.
    pub ephemeral: bool,
}

impl Naming {
    /// Name of service `j`.
    pub fn service(&self, j: usize) -> String {
        format!("{}-{j}", self.prefix)
    }

    /// IP of instance `n`.
    pub fn ip(&self, n: usize) -> String {
        let v = n + 1;
        format!(
            "{}.{}.{}.{}",
            self.ip_octet,
            (v >> 16) & 255,
            (v >> 8) & 255,
            v & 255
        )
    }

    /// `POST /nacos/v1/ns/instance` (success body `ok`).
    pub fn register(&self, svc: &str, ip: &str, port: u16) -> Vec<u8> {
        let q = format!(
            "/nacos/v1/ns/instance?serviceName={svc}&ip={ip}&port={port}&ephemeral={}",
            self.ephemeral
        );
        self.target.request("POST", &q, &self.user_agent)
    }

    /// `DELETE /nacos/v1/ns/instance` (success body `ok`).
    pub fn deregister(&self, svc: &str, ip: &str, port: u16) -> Vec<u8> {
        let q = format!(
            "/nacos/v1/ns/instance?serviceName={svc}&ip={ip}&port={port}&ephemeral={}",
            self.ephemeral
        );
        self.target.request("DELETE", &q, &self.user_agent)
    }

    /// Full beat: `PUT /nacos/v1/ns/instance/beat?serviceName=..&beat=<RsInfo JSON>`.
    pub fn beat_full(&self, svc: &str, ip: &str, port: u16) -> Vec<u8> {
        let beat = format!(
            r#"{{"ip":"{ip}","port":{port},"serviceName":"{svc}","cluster":"DEFAULT","weight":1.0,"metadata":{{}}}}"#
        );
        let q = format!(
            "/nacos/v1/ns/instance/beat?serviceName={svc}&beat={}",
            urlencode(&beat)
        );
        self.target.request("PUT", &q, &self.user_agent)
    }

    /// Light beat: `PUT /nacos/v1/ns/instance/beat?serviceName=..&ip=..&port=..&clusterName=DEFAULT`.
    pub fn beat_light(&self, svc: &str, ip: &str, port: u16) -> Vec<u8> {
        let q = format!(
            "/nacos/v1/ns/instance/beat?serviceName={svc}&ip={ip}&port={port}&clusterName=DEFAULT"
        );
        self.target.request("PUT", &q, &self.user_agent)
    }

    /// `GET /nacos/v1/ns/instance/list?serviceName=..&healthyOnly=true`.
    pub fn list(&self, svc: &str) -> Vec<u8> {
        let q = format!("/nacos/v1/ns/instance/list?serviceName={svc}&healthyOnly=true");
        self.target.request("GET", &q, &self.user_agent)
    }

    /// `GET /nacos/v1/ns/instance/list` subscribing `udp_port` on 127.0.0.1 to pushes.
    pub fn subscribe(&self, svc: &str, udp_port: u16) -> Vec<u8> {
        let q = format!(
            "/nacos/v1/ns/instance/list?serviceName={svc}&udpPort={udp_port}&clientIP=127.0.0.1"
        );
        self.target.request("GET", &q, &self.user_agent)
    }

    /// Setup requests registering pool instances `0..count`, instance `n` in
    /// service `n % services`.
    pub fn register_pool(&self, count: usize, services: usize) -> Vec<(Vec<u8>, Check)> {
        (0..count)
            .map(|n| {
                (
                    self.register(&self.service(n % services), &self.ip(n), POOL_PORT),
                    Check::Ok,
                )
            })
            .collect()
    }
}

/// Which beat flavour the `beat` scenario sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeatKind {
    /// Only full beats (with the `beat` JSON).
    Full,
    /// Only light beats (ip/port params).
    Light,
    /// Alternating full and light.
    Mixed,
}

/// Spreads a pool of `pool` items over `conns` connections: connection `c`
/// gets items `c, c+conns, ...` (or item `c % pool` if the pool is smaller).
fn spread(pool: usize, conns: usize, mut make: impl FnMut(usize) -> Req) -> Vec<Vec<Req>> {
    assert!(pool > 0 && conns > 0);
    (0..conns)
        .map(|c| {
            if c >= pool {
                vec![make(c % pool)]
            } else {
                (c..pool).step_by(conns).map(&mut make).collect()
            }
        })
        .collect()
}

fn op(name: &str, check: Check) -> OpSpec {
    OpSpec {
        name: name.into(),
        check,
    }
}

/// `register`: distinct instances `0..instances` spread over `services`
/// services. After one pass the pool wraps and re-registers (an idempotent
/// update on a Nacos server).
pub fn register(n: &Naming, conns: usize, services: usize, instances: usize) -> Workload {
    let name = if n.ephemeral {
        "register"
    } else {
        "persistent_register"
    };
    Workload {
        ops: vec![op(name, Check::Ok)],
        per_conn: spread(instances, conns, |i| Req {
            bytes: n.register(&n.service(i % services), &n.ip(i), POOL_PORT),
            op: 0,
        }),
        stamp: 0,
    }
}

/// `deregister`: deletes the pool that setup registered (see
/// [`Naming::register_pool`]). After one pass deletes hit missing instances,
/// which a Nacos server also answers with `ok`.
pub fn deregister(n: &Naming, conns: usize, services: usize, instances: usize) -> Workload {
    Workload {
        ops: vec![op("deregister", Check::Ok)],
        per_conn: spread(instances, conns, |i| Req {
            bytes: n.deregister(&n.service(i % services), &n.ip(i), POOL_PORT),
            op: 0,
        }),
        stamp: 0,
    }
}

/// `beat`: beats for the registered pool, cycling over all instances.
pub fn beat(
    n: &Naming,
    conns: usize,
    services: usize,
    instances: usize,
    kind: BeatKind,
) -> Workload {
    let ops = vec![op("beat_full", Check::Beat), op("beat_light", Check::Beat)];
    let per_conn = spread(instances, conns, |i| {
        let svc = n.service(i % services);
        let ip = n.ip(i);
        let full = match kind {
            BeatKind::Full => true,
            BeatKind::Light => false,
            BeatKind::Mixed => i % 2 == 0,
        };
        if full {
            Req {
                bytes: n.beat_full(&svc, &ip, POOL_PORT),
                op: 0,
            }
        } else {
            Req {
                bytes: n.beat_light(&svc, &ip, POOL_PORT),
                op: 1,
            }
        }
    });
    Workload {
        ops,
        per_conn,
        stamp: 0,
    }
}

/// `list`: `GET instance/list?healthyOnly=true` round-robin over `services`
/// services (each populated by setup with `instances` instances).
pub fn list(n: &Naming, conns: usize, services: usize) -> Workload {
    Workload {
        ops: vec![op("list", Check::Hosts)],
        per_conn: (0..conns)
            .map(|c| {
                (0..services)
                    .map(|k| Req {
                        bytes: n.list(&n.service((c + k) % services)),
                        op: 0,
                    })
                    .collect()
            })
            .collect(),
        stamp: 0,
    }
}

/// Setup for `list`: `instances` instances in each of `services` services
/// (service `j` holds pool instances `j*instances .. (j+1)*instances`).
pub fn list_setup(n: &Naming, services: usize, instances: usize) -> Vec<(Vec<u8>, Check)> {
    (0..services * instances)
        .map(|i| {
            (
                n.register(&n.service(i / instances), &n.ip(i), POOL_PORT),
                Check::Ok,
            )
        })
        .collect()
}

/// Operation weights for `mixed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Weight of `instance/list?healthyOnly=true`.
    pub list: u32,
    /// Weight of beats (alternating full and light).
    pub beat: u32,
    /// Weight of registering churn instances.
    pub register: u32,
    /// Weight of deregistering churn instances.
    pub deregister: u32,
}

impl std::str::FromStr for Mix {
    type Err = String;
    /// Parses `list=90,beat=8,register=1,deregister=1` (omitted kinds weigh 0).
    fn from_str(s: &str) -> Result<Mix, String> {
        let mut m = Mix {
            list: 0,
            beat: 0,
            register: 0,
            deregister: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("expected kind=weight, got {part:?}"))?;
            let v: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("bad weight in {part:?}"))?;
            match k.trim() {
                "list" => m.list = v,
                "beat" => m.beat = v,
                "register" => m.register = v,
                "deregister" => m.deregister = v,
                other => {
                    return Err(format!(
                        "unknown kind {other:?} (list, beat, register, deregister)"
                    ))
                }
            }
        }
        if m.weights().iter().sum::<u32>() == 0 {
            return Err("all weights are zero".into());
        }
        Ok(m)
    }
}

impl Mix {
    fn weights(&self) -> [u32; 4] {
        [self.list, self.beat, self.register, self.deregister]
    }
}

/// Smooth weighted round-robin (as in nginx): a sequence of `len` op indices
/// whose counts follow `weights` and which interleaves them evenly.
pub fn swrr(weights: &[u32], len: usize) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| w as i64).sum();
    let mut cur = vec![0i64; weights.len()];
    (0..len)
        .map(|_| {
            let mut best = 0;
            for (i, w) in weights.iter().enumerate() {
                cur[i] += *w as i64;
                if cur[i] > cur[best] {
                    best = i;
                }
            }
            cur[best] -= total;
            best
        })
        .collect()
}

/// `mixed`: lists over `services` services with `instances` each, beats over
/// those instances, and register/deregister of per-connection churn instances
/// (port [`CHURN_PORT`]). Setup is [`list_setup`].
pub fn mixed(n: &Naming, conns: usize, services: usize, instances: usize, mix: &Mix) -> Workload {
    let weights = mix.weights();
    let total: u32 = weights.iter().sum();
    // Sequence length per connection: a multiple of the weight total, at least 200.
    let len = (200usize.div_ceil(total as usize)) * total as usize;
    let seq = swrr(&weights, len);
    let pool = services * instances;
    let ops = vec![
        op("list", Check::Hosts),
        op("beat_full", Check::Beat),
        op("beat_light", Check::Beat),
        op("register", Check::Ok),
        op("deregister", Check::Ok),
    ];
    let per_conn = (0..conns)
        .map(|c| {
            let mut counts = [0usize; 4];
            seq.iter()
                .map(|&kind| {
                    let k = counts[kind];
                    counts[kind] += 1;
                    match kind {
                        0 => Req {
                            bytes: n.list(&n.service((c + k) % services)),
                            op: 0,
                        },
                        1 => {
                            let i = (c + k * conns) % pool;
                            let (svc, ip) = (n.service(i / instances), n.ip(i));
                            if k % 2 == 0 {
                                Req {
                                    bytes: n.beat_full(&svc, &ip, POOL_PORT),
                                    op: 1,
                                }
                            } else {
                                Req {
                                    bytes: n.beat_light(&svc, &ip, POOL_PORT),
                                    op: 2,
                                }
                            }
                        }
                        _ => {
                            let i = c * len + k;
                            let svc = n.service(i % services);
                            let ip = n.ip(i);
                            if kind == 2 {
                                Req {
                                    bytes: n.register(&svc, &ip, CHURN_PORT),
                                    op: 3,
                                }
                            } else {
                                Req {
                                    bytes: n.deregister(&svc, &ip, CHURN_PORT),
                                    op: 4,
                                }
                            }
                        }
                    }
                })
                .collect()
        })
        .collect();
    Workload {
        ops,
        per_conn,
        stamp: 0,
    }
}

/// Counts the entries of the `hosts` array in an `instance/list` body.
pub fn count_hosts(body: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(v.get("hosts")?.as_array()?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming() -> Naming {
        Naming {
            target: Target::parse("http://127.0.0.1:8848").unwrap(),
            user_agent: "ua".into(),
            prefix: "p".into(),
            ip_octet: 10,
            ephemeral: true,
        }
    }

    fn line(r: &[u8]) -> String {
        let s = String::from_utf8(r.to_vec()).unwrap();
        s.lines().next().unwrap().to_string()
    }

    #[test]
    fn request_lines() {
        let n = naming();
        assert_eq!(n.ip(0), "10.0.0.1");
        assert_eq!(n.ip(65535), "10.1.0.0");
        assert_eq!(
            line(&n.register("p-3", "10.0.0.1", 8080)),
            "POST /nacos/v1/ns/instance?serviceName=p-3&ip=10.0.0.1&port=8080&ephemeral=true HTTP/1.1"
        );
        assert_eq!(
            line(&n.beat_light("p-1", "10.0.0.2", 8080)),
            "PUT /nacos/v1/ns/instance/beat?serviceName=p-1&ip=10.0.0.2&port=8080&clusterName=DEFAULT HTTP/1.1"
        );
        let full = line(&n.beat_full("p-1", "10.0.0.2", 8080));
        assert!(full.starts_with(
            "PUT /nacos/v1/ns/instance/beat?serviceName=p-1&beat=%7B%22ip%22%3A%2210.0.0.2%22"
        ));
        assert_eq!(
            line(&n.list("p-0")),
            "GET /nacos/v1/ns/instance/list?serviceName=p-0&healthyOnly=true HTTP/1.1"
        );
        assert!(line(&n.subscribe("p-0", 4000)).contains("udpPort=4000&clientIP=127.0.0.1"));
    }

    #[test]
    fn spreads_distinct_instances() {
        let n = naming();
        let w = register(&n, 3, 2, 10);
        assert_eq!(
            w.per_conn.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 3, 3]
        );
        let mut all: Vec<String> = w
            .per_conn
            .iter()
            .flatten()
            .map(|r| line(&r.bytes))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 10);
        // More connections than instances: every connection still has work.
        let w = deregister(&n, 5, 1, 2);
        assert!(w.per_conn.iter().all(|r| r.len() == 1));
    }

    #[test]
    fn beat_kinds() {
        let n = naming();
        let w = beat(&n, 2, 1, 4, BeatKind::Mixed);
        let ops: Vec<usize> = w.per_conn.iter().flatten().map(|r| r.op).collect();
        assert!(ops.contains(&0) && ops.contains(&1));
        let w = beat(&n, 2, 1, 4, BeatKind::Light);
        assert!(w.per_conn.iter().flatten().all(|r| r.op == 1));
    }

    #[test]
    fn mix_parsing_and_swrr() {
        let m: Mix = "list=90, beat=8,register=1,deregister=1".parse().unwrap();
        assert_eq!(m.weights(), [90, 8, 1, 1]);
        assert!("list=0".parse::<Mix>().is_err());
        assert!("foo=1".parse::<Mix>().is_err());
        let s = swrr(&[5, 3, 2], 100);
        let count = |k| s.iter().filter(|&&x| x == k).count();
        assert_eq!((count(0), count(1), count(2)), (50, 30, 20));
        // Evenly interleaved: no op repeats more than twice in a row here.
        assert!(s.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])));
    }

    #[test]
    fn mixed_workload_follows_ratio() {
        let n = naming();
        let m: Mix = "list=2,beat=2,register=1,deregister=1".parse().unwrap();
        let w = mixed(&n, 2, 3, 4, &m);
        let reqs: Vec<&Req> = w.per_conn.iter().flatten().collect();
        let c = |op| reqs.iter().filter(|r| r.op == op).count();
        assert_eq!(c(0), c(1) + c(2));
        assert_eq!(c(3), c(4));
        assert_eq!(c(0), 2 * c(3));
    }

    #[test]
    fn counts_hosts() {
        assert_eq!(count_hosts(br#"{"hosts":[{},{}],"name":"x"}"#), Some(2));
        assert_eq!(count_hosts(b"ok"), None);
    }
}
