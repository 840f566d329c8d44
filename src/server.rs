//! Process lifecycle: start the shards, accept connections everywhere, shut down gracefully.
//!
//! Startup checks that no other process listens on the address, binds it once to resolve port 0,
//! then every shard listens on the same address with `SO_REUSEPORT` so the kernel spreads
//! connections across shards (see [`crate::node::listener`] for why a restart on the same port works). When every
//! shard is accepting, `muster listening on ADDR` is printed on stdout. SIGTERM or SIGINT stops
//! accepting, lets in-flight requests finish (bounded by the grace period), and returns.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::clock::SystemClock;
use crate::naming::view::ReadView;
use crate::node::listener::{self, ListenError};
use crate::node::metrics::Metrics;
use crate::node::shard::{Shard, Shared};
use crate::settings::Config;

/// Raises `RLIMIT_MEMLOCK` as far as allowed: io_uring needs locked memory for its rings.
fn raise_memlock() {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) == 0 {
            let want = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &want) != 0 {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
            }
        }
    }
}

/// Checks that no other process listens on `addr`, then binds it (not listening) with
/// `SO_REUSEPORT` to resolve port 0 and hold the port until every shard listens.
fn reserve(addr: SocketAddr) -> Result<(socket2::Socket, SocketAddr), ListenError> {
    listener::ensure_free(addr)?;
    let sock = listener::bind(addr)?;
    let bound = sock
        .local_addr()
        .and_then(|a| {
            a.as_socket()
                .ok_or_else(|| std::io::Error::other("not an IP socket address"))
        })
        .map_err(|source| ListenError::Io {
            op: "read the bound address of",
            addr,
            source,
        })?;
    Ok((sock, bound))
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The data directory could not be created.
    #[error("cannot create data dir {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The write-ahead log could not be recovered.
    #[error("{source}{}", recovery_hint(source, *mode))]
    Recovery {
        /// What recovery reported.
        source: crate::consensus::Error,
        /// The recovery mode it ran in.
        mode: crate::settings::WalRecovery,
    },
    /// The listen address is taken or cannot be bound.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The peer port (cluster mode) cannot be bound.
    #[error("cannot listen for peers on {addr}: {source}")]
    PeerListen {
        /// The peer listen address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A shard's push socket could not be bound.
    #[error("shard {id} cannot bind its UDP push socket on {addr}: {source}")]
    PushSocket {
        /// The shard.
        id: usize,
        /// The address tried (the listen IP, port 0).
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A shard's executor could not be started, or did not report in time.
    #[error("cannot start shard {id}: {why}")]
    Shard {
        /// The shard.
        id: usize,
        /// glommio's error, or the timeout.
        why: String,
    },
    /// A Distro replication outbox thread could not be started.
    #[error("cannot start a replication outbox thread: {0}")]
    Outbox(std::io::Error),
    /// The raft thread could not be started.
    #[error("cannot start the raft thread: {0}")]
    RaftThread(std::io::Error),
    /// Two members' addresses give the same raft id (a 2^-63 chance; change one's port).
    #[error("two members of {0:?} have the same raft id; change one member's address")]
    RaftIds(Vec<SocketAddr>),
    /// The thread of the cluster's startup load could not be started.
    #[error("cannot start the startup-load thread: {0}")]
    LoadThread(std::io::Error),
}

/// What an operator can do about a recovery refusal in the strict mode.
fn recovery_hint(e: &crate::consensus::Error, mode: crate::settings::WalRecovery) -> &'static str {
    // Only damage to the log's bytes: an entry this version cannot apply (say, a newer
    // domain) is not a damaged tail, and dropping it would lose acknowledged data.
    let damaged =
        matches!(e, crate::consensus::Error::Open { source, .. } if source.is_corruption());
    if damaged && mode == crate::settings::WalRecovery::Strict {
        "; if the damage is confined to the end of the log, `muster-wal verify` says so and \
         --wal-recovery truncate-tail drops it (see README, Operations)"
    } else {
        ""
    }
}

/// CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills a local cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    vec![0]
}

/// Runs the server until SIGTERM or SIGINT. Returns an error if startup fails.
pub fn run(config: Config) -> Result<(), StartError> {
    // Installed first, so a signal that arrives during startup is not fatal.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(StartError::Signals)?;
    raise_memlock();
    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        shards = config.shards,
        version = env!("CARGO_PKG_VERSION"),
        "muster starting"
    );
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let group = match &config.cluster {
        None => crate::consensus::Group::Standalone,
        Some(c) => {
            let mut voters: Vec<u64> = c
                .members
                .iter()
                .map(|&m| crate::cluster::Members::raft_id(m))
                .collect();
            voters.sort_unstable();
            voters.dedup();
            if voters.len() != c.members.len() {
                return Err(StartError::RaftIds(c.members.clone()));
            }
            crate::consensus::Group::Cluster {
                id: crate::cluster::Members::raft_id(c.this),
                voters,
                join: c.raft_join,
            }
        }
    };
    let recovery = crate::consensus::recover(
        &config.data_dir,
        config.wal_segment_bytes,
        config.wal_recovery.into(),
        &group,
    )
    .map_err(|source| StartError::Recovery {
        source,
        mode: config.wal_recovery,
    })?;
    let (proposals_tx, proposals_rx) = flume::bounded(config.inbox_capacity);
    let (reads_tx, reads_rx) = flume::bounded(config.inbox_capacity);
    // Raft messages from members and the transport's reports (bounded: a full inbox drops
    // messages, which raft resends).
    let (raft_in_tx, raft_in_rx) = flume::bounded(crate::node::transport::QUEUE * 4);
    let (reservation, listen) = reserve(config.listen)?;
    // Cluster mode: the peer port is bound before anything serves, so a taken port refuses
    // start like a taken listen address does.
    let peer_stop = Arc::new(AtomicBool::new(false));
    let (members, peers, transport) = match &config.cluster {
        None => (None, None, None),
        Some(c) => {
            let members = Arc::new(crate::cluster::Members::new(c.this, &c.members));
            let settings = crate::node::peer::PeerSettings {
                listen: c.peer_listen,
                secret: c.secret.clone(),
                ping: std::time::Duration::from_millis(c.ping_ms),
            };
            let (bound, peers) =
                crate::node::peer::start(settings.clone(), members.clone(), peer_stop.clone())
                    .map_err(|source| StartError::PeerListen {
                        addr: c.peer_listen,
                        source,
                    })?;
            let transport = crate::node::transport::Transport::start(
                &members,
                &settings,
                peer_stop.clone(),
                raft_in_tx.clone(),
                c.snapshot_rate,
            )
            .map_err(StartError::RaftThread)?;
            peers.serve_raft(crate::node::transport::handler(
                Arc::default(),
                raft_in_tx.clone(),
                transport.stats.clone(),
            ));
            tracing::info!(
                this = %c.this,
                raft_id = members.this_id(),
                members = ?c.members,
                peer_listen = %bound,
                "cluster member"
            );
            (Some(members), Some(peers), Some(transport))
        }
    };
    let n = config.shards;
    let mut inboxes = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = flume::bounded(config.inbox_capacity);
        inboxes.push(tx);
        receivers.push(rx);
    }
    let shared = Arc::new(Shared {
        config: config.clone(),
        listen,
        view: Arc::new(ReadView::default()),
        metrics: Arc::new(Metrics::new(n, crate::api::Endpoint::NAMES)),
        inboxes,
        ownership: match &members {
            Some(m) => crate::node::ownership::Ownership::cluster(n, m.clone()),
            None => crate::node::ownership::Ownership::standalone(n),
        },
        members,
        outboxes: match &peers {
            Some(p) => crate::node::distro::outboxes(p).map_err(StartError::Outbox)?,
            None => Default::default(),
        },
        peers,
        ready: AtomicBool::new(false),
        recovered: AtomicBool::new(false),
        loaded: AtomicBool::new(config.cluster.is_none()),
        connections: Default::default(),
        draining: AtomicUsize::new(n),
        proposals: proposals_tx,
        reads: reads_tx,
        transport,
        raft: Default::default(),
        stopping: AtomicBool::new(false),
        configs: crate::node::config::ConfigHub::new(
            n,
            recovery.sm.config.clone(),
            config.inbox_capacity,
        ),
    });
    if let Some(peers) = &shared.peers {
        peers.serve(crate::node::distro::handler(Arc::downgrade(&shared)));
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("muster-distro-load".into())
            .spawn(move || crate::node::distro::load(&shared))
            .map_err(StartError::LoadThread)?;
    }
    let (shutdown_tx, shutdown_rx) = flume::bounded::<()>(1);
    let (bound_tx, bound_rx) = mpsc::channel::<Result<usize, StartError>>();
    let cpus = allowed_cpus();
    let clock = SystemClock::new();
    let mut handles = Vec::with_capacity(n);
    for (id, inbox) in receivers.into_iter().enumerate() {
        let shared = shared.clone();
        let shutdown = shutdown_rx.clone();
        let bound_tx = bound_tx.clone();
        let placement = if config.pin {
            Placement::Fixed(cpus[id % cpus.len()])
        } else {
            Placement::Unbound
        };
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("muster-shard-{id}"))
            .io_memory(1 << 20)
            .preempt_timer(Duration::from_millis(10));
        let handle = builder
            .spawn(move || async move {
                run_shard(id, shared, inbox, shutdown, bound_tx, clock).await;
            })
            .map_err(|e| StartError::Shard {
                id,
                why: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(bound_tx);
    let mut started = vec![false; n];
    for _ in 0..n {
        match bound_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(id)) => started[id] = true,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(StartError::Shard {
                    id: started.iter().position(|s| !s).unwrap_or(0),
                    why: "it did not report ready within 30 s".into(),
                })
            }
        }
    }
    drop(reservation);
    tracing::info!(%listen, shards = n, data_dir = %config.data_dir.display(), "muster is ready");
    println!("muster listening on {listen}");
    drop(raft_in_tx);
    let raft = crate::node::raft::spawn(
        recovery,
        shared.clone(),
        crate::node::raft::Inputs {
            proposals: proposals_rx,
            reads: reads_rx,
            inbound: raft_in_rx,
        },
        crate::node::raft::RaftSettings {
            snapshot_entries: config.snapshot_entries,
            id: group.id(),
            tick: Duration::from_millis(config.cluster.as_ref().map_or(100, |c| c.raft_tick_ms)),
            ticks: crate::consensus::driver::Ticks {
                election: config
                    .cluster
                    .as_ref()
                    .map_or(10, |c| c.raft_election_ticks),
                heartbeat: 3,
            },
        },
    )
    .map_err(StartError::RaftThread)?;

    // SIGHUP re-reads cluster.conf (node/membership.rs); SIGTERM and SIGINT stop.
    let mut stop_signal = None;
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            match crate::node::membership::reload(&shared) {
                Ok(_) => {}
                Err(e) => tracing::warn!("SIGHUP: member list not reloaded: {e}"),
            }
            continue;
        }
        stop_signal = Some(sig);
        break;
    }
    if let Some(sig) = stop_signal {
        tracing::info!(
            signal = sig,
            %listen,
            data_dir = %config.data_dir.display(),
            "shutting down: no new connections, finishing in-flight requests"
        );
    }
    shared.ready.store(false, Ordering::SeqCst);
    drop(shutdown_tx);
    for h in handles {
        let _ = h.join();
    }
    // Every shard is gone: the raft thread drains what is queued and ends.
    shared.stopping.store(true, Ordering::SeqCst);
    peer_stop.store(true, Ordering::SeqCst);
    let _ = raft.join();
    tracing::info!(%listen, data_dir = %config.data_dir.display(), "muster stopped");
    Ok(())
}

async fn run_shard(
    id: usize,
    shared: Arc<Shared>,
    inbox: flume::Receiver<crate::node::mailbox::Message>,
    shutdown: flume::Receiver<()>,
    bound: mpsc::Sender<Result<usize, StartError>>,
    clock: SystemClock,
) {
    let listener = match listener::listen(shared.listen) {
        Ok(l) => l,
        Err(e) => {
            let _ = bound.send(Err(e.into()));
            return;
        }
    };
    let udp_addr = std::net::SocketAddr::new(shared.listen.ip(), 0);
    let udp = match glommio::net::UdpSocket::bind(udp_addr) {
        Ok(u) => u,
        Err(e) => {
            let _ = bound.send(Err(StartError::PushSocket {
                id,
                addr: udp_addr,
                source: e.into(),
            }));
            return;
        }
    };
    let shard = Rc::new(Shard::new(id, shared.clone(), clock, udp));
    glommio::spawn_local(shard.clone().run_acks()).detach();
    let stop_ticks = Rc::new(Cell::new(false));
    glommio::spawn_local(shard.clone().run_inbox(inbox)).detach();
    glommio::spawn_local(shard.clone().run_ticks(stop_ticks.clone())).detach();
    if let Some(rx) = shared.configs.take_notices(id) {
        glommio::spawn_local(crate::node::config::run_notices(shard.clone(), rx)).detach();
    }
    let _ = bound.send(Ok(id));

    let open = Rc::new(Cell::new(0usize));
    let max = shared.config.max_connections;
    loop {
        let accepted = {
            let mut accept = std::pin::pin!(listener.accept());
            let mut stop = std::pin::pin!(shutdown.recv_async());
            std::future::poll_fn(|cx| {
                use std::future::Future;
                if let std::task::Poll::Ready(r) = accept.as_mut().poll(cx) {
                    return std::task::Poll::Ready(Some(r));
                }
                if stop.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(None);
                }
                std::task::Poll::Pending
            })
            .await
        };
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!(shard = id, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let m = shard.metrics();
        let peer = stream
            .peer_addr()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
        if !shared.connections.admit(peer, max) {
            m.connections_rejected.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        m.connections_open.fetch_add(1, Ordering::Relaxed);
        open.set(open.get() + 1);
        let (shard2, open2, shared2) = (shard.clone(), open.clone(), shared.clone());
        glommio::spawn_local(async move {
            crate::http::serve(shard2.clone(), stream).await;
            open2.set(open2.get() - 1);
            shared2.connections.release(peer);
            shard2
                .metrics()
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
    drop(listener);
    // Idle connections close now; busy ones after their answer. Held config polls answer now.
    shard.connections.stop();
    crate::node::config::release_polls(&shard);
    // Drain: wait for this shard's connections, then for every other shard, while the inbox
    // keeps serving cross-shard writes from their in-flight requests.
    let grace = Duration::from_millis(shared.config.shutdown_grace_ms);
    let start = std::time::Instant::now();
    while open.get() > 0 && start.elapsed() < grace {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    shared.draining.fetch_sub(1, Ordering::SeqCst);
    while shared.draining.load(Ordering::SeqCst) > 0 && start.elapsed() < grace * 2 {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    stop_ticks.set(true);
}
