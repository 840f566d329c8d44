//! `muster-bench` command line.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};

use muster_bench::config::{self, ConfigApi, ListenConfig};
use muster_bench::engine::{self, Check, EngineConfig, Progress, Workload};
use muster_bench::http::{Target, DEFAULT_USER_AGENT};
use muster_bench::parse_duration;
use muster_bench::report::{Report, Wakes};
use muster_bench::scenario::{self, BeatKind, Mix, Naming};
use muster_bench::stats::OpStats;
use muster_bench::subscribe::{self, SubscribeConfig};

const EXAMPLES: &str = "\
Examples:
  # Maximum register throughput: closed loop, 64 keep-alive connections, 30 s
  muster-bench register --url http://127.0.0.1:8848 -c 64 -d 30s

  # Latency at a fixed 20k req/s (open loop, no coordinated omission),
  # listing services of 100 instances, one JSON object on stdout
  muster-bench list --instances 100 --rate 20000 --json

  # Light beats for 5000 instances, bench pinned to cpu 0, server on cpu 1
  taskset -c 0 muster-bench beat --instances 5000 --kind light

  # Read-heavy mix
  muster-bench mixed --mix list=90,beat=8,register=1,deregister=1 -c 32

  # UDP push latency: 50 subscribers, 5 writes/s for 20 s
  muster-bench subscribe --subscribers 50 --rate 5 -d 20s

  # Config get of a 1 KiB config, and publish to 1000 configs
  muster-bench config-get --size 1024 -c 64
  muster-bench config-publish --configs 1000 -c 64

  # Long-poll wake-up: 10000 held polls, 20 publishes/s, each answers one poll
  muster-bench config-listen --listeners 10000 --rate 20 -w 10s -d 10s

  # Calibrate against a plain HTTP server (compare with wrk)
  muster-bench get --url http://127.0.0.1:8080 --path / -c 64

Load model:
  Without --rate each connection sends its next request as soon as the
  previous response arrives (closed loop: maximum throughput). With --rate R
  requests are scheduled at R/s in total and latency is measured from each
  request's intended send time, so server stalls show up as queueing delay.
  Requests started during --warmup are not recorded.

Exit status: 0 on success, 1 on usage or setup failure, 2 when the error
rate exceeds --max-error-rate.";

/// Load generator for Nacos 1.x naming and config HTTP servers.
///
/// Sends pre-built Nacos naming API requests over many keep-alive HTTP/1.1
/// connections and reports hdrhistogram latency percentiles (us), throughput
/// and errors by kind.
#[derive(Parser, Debug)]
#[command(name = "muster-bench", version, after_long_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Register distinct ephemeral instances spread over S services.
    ///
    /// POST /nacos/v1/ns/instance?serviceName=..&ip=..&port=8080&ephemeral=true; expects `ok`.
    /// Once every instance of the pool was registered, the pool wraps around
    /// and re-registers (an update).
    Register(PoolArgs),
    /// Deregister instances that setup registered first.
    ///
    /// DELETE /nacos/v1/ns/instance; expects `ok`. When the pool is
    /// exhausted, deletes hit missing instances (Nacos still answers `ok`).
    Deregister(PoolArgs),
    /// Register persistent instances (ephemeral=false).
    ///
    /// Uses 127.x.y.z addresses so that any health probe a server sends to
    /// persistent instances stays on loopback.
    PersistentRegister(PoolArgs),
    /// Full and/or light heartbeats for instances registered by setup.
    ///
    /// PUT /nacos/v1/ns/instance/beat; expects a JSON body with "code":10200.
    Beat(BeatArgs),
    /// GET /nacos/v1/ns/instance/list?healthyOnly=true on services of N instances.
    ///
    /// Setup registers --instances instances in each of --services services.
    List(ListArgs),
    /// A configurable mix of list, beat, register and deregister.
    Mixed(MixedArgs),
    /// UDP push latency: M subscribers, one writer; time from a write's `ok`
    /// to datagram receipt.
    Subscribe(SubscribeArgs),
    /// GET /nacos/v1/cs/configs of configs that setup publishes.
    ///
    /// Setup publishes --configs configs `<prefix>-<k>` (group DEFAULT_GROUP) of --size
    /// bytes; connections GET them round-robin; any 2xx is a success.
    ConfigGet(ConfigArgs),
    /// POST /nacos/v1/cs/configs (form body) over --configs configs; expects `true`.
    ///
    /// Every publish carries a --size-byte content whose last 18 digits differ on each
    /// send, so no publish repeats a config's current content.
    ConfigPublish(ConfigArgs),
    /// Long-poll wake-up latency: N held `configs/listener` polls, publishes at --rate;
    /// time from a publish's `ok` to the answer of each poll on that config.
    ///
    /// Poll i listens to config `<prefix>-<run id>-<i % keys>` (which does not exist yet, md5 "")
    /// with Long-Pulling-Timeout 30000, one connection per poll. Write n publishes config
    /// `(n-1) % keys`; each answered poll is sent again with the new md5. Polls open during
    /// --warmup (make it long enough to connect them all). Raises RLIMIT_NOFILE as needed.
    ConfigListen(ListenArgs),
    /// Plain GET of a path expecting any 2xx (calibration against nginx/wrk).
    Get(GetArgs),
    /// Draw an SVG of p50/p90/p99/p99.9 per server per scenario from `--json`
    /// reports (no load is sent).
    ///
    /// Files named `<label>__<server>__<round>.json` are grouped by label
    /// (one panel) and server (one line); each percentile is the median over
    /// the group's files. `subscribe` reports plot push latency from the
    /// write's send time.
    Chart(ChartArgs),
}

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Run options")]
struct Common {
    /// Server base URL (http only); or a comma-separated list of a cluster's members, over
    /// which the connections are spread round robin (setup requests go to the first).
    #[arg(short, long, default_value = "http://127.0.0.1:8848")]
    url: String,
    /// Measured window (units: us, ms, s, m; bare number = seconds).
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unrecorded warm-up before the measured window.
    #[arg(short, long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Per-request timeout (connect + response); also the open-loop drain time.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Exit with status 2 when failed/all requests exceeds this fraction.
    #[arg(long, default_value_t = 0.01)]
    max_error_rate: f64,
    /// Service name prefix (services are <prefix>-<n>), so runs don't collide.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// User-Agent header. The default is a Java client, which Nacos pushes to.
    #[arg(long, default_value = DEFAULT_USER_AGENT)]
    user_agent: String,
    /// Never print the live progress line (it is only shown when stderr is a TTY).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Load model")]
struct Load {
    /// Keep-alive connections.
    #[arg(short, long, default_value_t = 32)]
    connections: usize,
    /// Open-loop arrival rate in requests/s over all connections; omit for
    /// closed loop (maximum throughput).
    #[arg(short, long)]
    rate: Option<f64>,
    /// Worker threads, each with its own single-threaded runtime.
    #[arg(short, long, default_value_t = 1)]
    threads: usize,
}

#[derive(Args, Debug)]
struct PoolArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    load: Load,
    /// Number of services the instances are spread over.
    #[arg(help_heading = "Scenario", long, default_value_t = 100)]
    services: usize,
    /// Number of distinct instances (the pool).
    #[arg(help_heading = "Scenario", long, default_value_t = 10_000)]
    instances: usize,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BeatFlavor {
    /// Beats carrying the full `beat` JSON.
    Full,
    /// Light beats (ip, port, clusterName params only).
    Light,
    /// Alternate full and light.
    Mixed,
}

#[derive(Args, Debug)]
struct BeatArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    load: Load,
    /// Number of services the instances are spread over.
    #[arg(help_heading = "Scenario", long, default_value_t = 10)]
    services: usize,
    /// Registered instances that receive beats.
    #[arg(help_heading = "Scenario", long, default_value_t = 1000)]
    instances: usize,
    /// Which beats to send.
    #[arg(help_heading = "Scenario", long, value_enum, default_value_t = BeatFlavor::Mixed)]
    kind: BeatFlavor,
}

#[derive(Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    load: Load,
    /// Instances per service (try 1, 10, 100, 1000).
    #[arg(help_heading = "Scenario", long, default_value_t = 10)]
    instances: usize,
    /// Services listed round-robin.
    #[arg(help_heading = "Scenario", long, default_value_t = 1)]
    services: usize,
}

#[derive(Args, Debug)]
struct MixedArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    load: Load,
    /// Operation weights, `kind=weight` for list, beat, register, deregister.
    #[arg(
        help_heading = "Scenario",
        long,
        default_value = "list=90,beat=8,register=1,deregister=1"
    )]
    mix: Mix,
    /// Instances per listed/beaten service.
    #[arg(help_heading = "Scenario", long, default_value_t = 10)]
    instances: usize,
    /// Services with --instances instances each.
    #[arg(help_heading = "Scenario", long, default_value_t = 10)]
    services: usize,
}

#[derive(Args, Debug)]
struct SubscribeArgs {
    #[command(flatten)]
    common: Common,
    /// UDP subscribers (each a socket on 127.0.0.1).
    #[arg(help_heading = "Scenario", short = 'm', long, default_value_t = 10)]
    subscribers: usize,
    /// Writes (marker registrations) per second.
    #[arg(help_heading = "Scenario", short, long, default_value_t = 2.0)]
    rate: f64,
    /// How long subscribers keep listening after the last write.
    #[arg(help_heading = "Scenario", long, default_value = "3s", value_parser = parse_duration)]
    grace: Duration,
    /// Subscription refresh interval (Nacos drops clients idle for 10 s).
    #[arg(help_heading = "Scenario", long, default_value = "5s", value_parser = parse_duration)]
    resubscribe: Duration,
}

#[derive(Args, Debug)]
struct ConfigArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    load: Load,
    /// Distinct configs (get: published by setup; publish: written round-robin).
    #[arg(help_heading = "Scenario", long, default_value_t = 1)]
    configs: usize,
    /// Content bytes per config (at least 18).
    #[arg(help_heading = "Scenario", long, default_value_t = 1024)]
    size: usize,
}

#[derive(Args, Debug)]
struct ListenArgs {
    #[command(flatten)]
    common: Common,
    /// Held long polls (one connection each).
    #[arg(help_heading = "Scenario", short = 'n', long, default_value_t = 1000)]
    listeners: usize,
    /// Configs the polls listen to (default: --listeners, one poll per config, so each
    /// publish answers one poll; 1: every publish answers every poll).
    #[arg(help_heading = "Scenario", long)]
    keys: Option<usize>,
    /// Publishes per second.
    #[arg(help_heading = "Scenario", short, long, default_value_t = 20.0)]
    rate: f64,
    /// How long polls stay open after the last publish.
    #[arg(help_heading = "Scenario", long, default_value = "2s", value_parser = parse_duration)]
    grace: Duration,
}

#[derive(Args, Debug)]
struct GetArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    load: Load,
    /// Path (and query) to GET.
    #[arg(help_heading = "Scenario", long, default_value = "/")]
    path: String,
}

#[derive(Args, Debug)]
struct ChartArgs {
    /// `--json` report files.
    #[arg(required = true)]
    files: Vec<std::path::PathBuf>,
    /// Output SVG path.
    #[arg(short, long, default_value = "latency.svg")]
    output: std::path::PathBuf,
    /// Chart title.
    #[arg(long, default_value = "Latency percentiles (median over rounds)")]
    title: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.scenario) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("muster-bench: {e}");
            ExitCode::from(1)
        }
    }
}

struct Plan {
    name: &'static str,
    common: Common,
    load: Load,
    setup: Vec<(Vec<u8>, Check)>,
    workload: Workload,
    /// Pool size, for "pool wrapped" notes.
    pool: Option<usize>,
    verify_list: Option<(Vec<u8>, usize)>,
}

fn naming(c: &Common, target: &Target, persistent: bool) -> Naming {
    Naming {
        target: target.clone(),
        user_agent: c.user_agent.clone(),
        prefix: c.prefix.clone(),
        ip_octet: if persistent { 127 } else { 10 },
        ephemeral: !persistent,
    }
}

fn check_load(l: &Load) -> Result<(), String> {
    if l.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if l.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    if l.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be positive".into());
    }
    Ok(())
}

fn positive(name: &str, v: usize) -> Result<(), String> {
    if v == 0 {
        return Err(format!("--{name} must be at least 1"));
    }
    Ok(())
}

fn run(s: Scenario) -> Result<ExitCode, String> {
    let plan = match s {
        Scenario::Subscribe(a) => return run_subscribe(a),
        Scenario::ConfigListen(a) => return run_config_listen(a),
        Scenario::ConfigGet(a) => config_plan("config-get", a)?,
        Scenario::ConfigPublish(a) => config_plan("config-publish", a)?,
        Scenario::Chart(a) => {
            muster_bench::chart::draw(&a.files, &a.output, &a.title)?;
            return Ok(ExitCode::SUCCESS);
        }
        Scenario::Register(a) => pool_plan("register", a)?,
        Scenario::Deregister(a) => pool_plan("deregister", a)?,
        Scenario::PersistentRegister(a) => pool_plan("persistent-register", a)?,
        Scenario::Beat(a) => {
            positive("services", a.services)?;
            positive("instances", a.instances)?;
            check_load(&a.load)?;
            let target = Target::parse(&a.common.url)?;
            let n = naming(&a.common, &target, false);
            let kind = match a.kind {
                BeatFlavor::Full => BeatKind::Full,
                BeatFlavor::Light => BeatKind::Light,
                BeatFlavor::Mixed => BeatKind::Mixed,
            };
            Plan {
                name: "beat",
                setup: n.register_pool(a.instances, a.services),
                workload: scenario::beat(&n, a.load.connections, a.services, a.instances, kind),
                pool: None,
                verify_list: None,
                common: a.common,
                load: a.load,
            }
        }
        Scenario::List(a) => {
            positive("services", a.services)?;
            positive("instances", a.instances)?;
            check_load(&a.load)?;
            let target = Target::parse(&a.common.url)?;
            let n = naming(&a.common, &target, false);
            Plan {
                name: "list",
                setup: scenario::list_setup(&n, a.services, a.instances),
                workload: scenario::list(&n, a.load.connections, a.services),
                pool: None,
                verify_list: Some((n.list(&n.service(0)), a.instances)),
                common: a.common,
                load: a.load,
            }
        }
        Scenario::Mixed(a) => {
            positive("services", a.services)?;
            positive("instances", a.instances)?;
            check_load(&a.load)?;
            let target = Target::parse(&a.common.url)?;
            let n = naming(&a.common, &target, false);
            Plan {
                name: "mixed",
                setup: scenario::list_setup(&n, a.services, a.instances),
                workload: scenario::mixed(&n, a.load.connections, a.services, a.instances, &a.mix),
                pool: None,
                verify_list: Some((n.list(&n.service(0)), a.instances)),
                common: a.common,
                load: a.load,
            }
        }
        Scenario::Get(a) => {
            check_load(&a.load)?;
            let target = Target::parse(&a.common.url)?;
            if !a.path.starts_with('/') {
                return Err("--path must start with /".into());
            }
            let bytes = target.request("GET", &a.path, &a.common.user_agent);
            Plan {
                name: "get",
                setup: Vec::new(),
                workload: Workload {
                    ops: vec![engine::OpSpec {
                        name: "get".into(),
                        check: Check::Status2xx,
                    }],
                    per_conn: (0..a.load.connections)
                        .map(|_| {
                            vec![engine::Req {
                                bytes: bytes.clone(),
                                op: 0,
                            }]
                        })
                        .collect(),
                    stamp: 0,
                },
                pool: None,
                verify_list: None,
                common: a.common,
                load: a.load,
            }
        }
    };
    execute(plan)
}

/// Builds the plan for `config-get` and `config-publish`.
fn config_plan(name: &'static str, a: ConfigArgs) -> Result<Plan, String> {
    positive("configs", a.configs)?;
    check_load(&a.load)?;
    if a.size < config::STAMP_DIGITS {
        return Err(format!("--size must be at least {}", config::STAMP_DIGITS));
    }
    let api = ConfigApi {
        target: Target::parse(&a.common.url)?,
        user_agent: a.common.user_agent.clone(),
        prefix: a.common.prefix.clone(),
    };
    let conns = a.load.connections;
    let (setup, workload) = if name == "config-get" {
        (
            config::get_setup(&api, a.configs, a.size),
            config::get(&api, conns, a.configs),
        )
    } else {
        (Vec::new(), config::publish(&api, conns, a.configs, a.size))
    };
    Ok(Plan {
        name,
        setup,
        workload,
        pool: None,
        verify_list: None,
        common: a.common,
        load: a.load,
    })
}

/// Builds the plan for the three pool scenarios.
fn pool_plan(name: &'static str, a: PoolArgs) -> Result<Plan, String> {
    positive("services", a.services)?;
    positive("instances", a.instances)?;
    check_load(&a.load)?;
    let target = Target::parse(&a.common.url)?;
    let persistent = name == "persistent-register";
    let n = naming(&a.common, &target, persistent);
    let conns = a.load.connections;
    let (setup, workload) = match name {
        "deregister" => (
            n.register_pool(a.instances, a.services),
            scenario::deregister(&n, conns, a.services, a.instances),
        ),
        _ => (
            Vec::new(),
            scenario::register(&n, conns, a.services, a.instances),
        ),
    };
    Ok(Plan {
        name,
        setup,
        workload,
        pool: Some(a.instances),
        verify_list: None,
        common: a.common,
        load: a.load,
    })
}

fn execute(mut plan: Plan) -> Result<ExitCode, String> {
    let target = Target::parse(&plan.common.url)?;
    let c = plan.common.clone();
    let mut notes = Vec::new();
    if !plan.setup.is_empty() {
        let n = plan.setup.len();
        if !c.json {
            eprintln!("setup: sending {n} request(s)...");
        }
        let t = Instant::now();
        let st = engine::run_once(
            target.addr,
            std::mem::take(&mut plan.setup),
            plan.load.connections.min(16),
            c.timeout,
        );
        if st.error_count() > 0 {
            let errs: Vec<String> = st.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return Err(format!(
                "setup failed: {} of {n} requests failed ({})",
                st.error_count(),
                errs.join(", ")
            ));
        }
        notes.push(format!(
            "setup: {n} requests in {:.2}s",
            t.elapsed().as_secs_f64()
        ));
    }
    if let Some((req, want)) = &plan.verify_list {
        let (status, body) = engine::fetch(target.addr, req, c.timeout)?;
        match scenario::count_hosts(&body) {
            Some(got) if status == 200 && got == *want => {}
            got => notes.push(format!(
                "warning: after setup the first service lists {got:?} healthy hosts (status {status}), expected {want}"
            )),
        }
    }
    let progress = Arc::new(Progress::default());
    let cfg = EngineConfig {
        addr: target.addr,
        spread: Target::members(&c.url)?.into_iter().skip(1).collect(),
        threads: plan.load.threads,
        warmup: c.warmup,
        duration: c.duration,
        rate: plan.load.rate,
        timeout: c.timeout,
        progress: Some(progress.clone()),
    };
    let ops: Vec<String> = plan.workload.ops.iter().map(|o| o.name.clone()).collect();
    let printer = ProgressPrinter::start(&c, progress);
    let result = engine::run(&cfg, plan.workload);
    printer.stop();
    if let Some(pool) = plan.pool {
        if result.total.requests() as usize > pool {
            notes.push(format!(
                "the {pool}-instance pool wrapped around during the run (later requests hit instances already handled); raise --instances for first-touch only"
            ));
        }
    }
    let report = Report {
        scenario: plan.name.to_string(),
        url: c.url.clone(),
        connections: plan.load.connections,
        threads: plan.load.threads.min(plan.load.connections),
        rate: plan.load.rate,
        warmup: c.warmup,
        duration: c.duration,
        total: result.total.clone(),
        ops: ops.into_iter().zip(result.per_op).collect(),
        push: None,
        push_from_send: None,
        datagrams: 0,
        wake: None,
        notes,
    };
    Ok(finish(&report, &c))
}

fn finish(report: &Report, c: &Common) -> ExitCode {
    if c.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    let rate = report.error_rate();
    if rate > c.max_error_rate {
        eprintln!(
            "muster-bench: error rate {:.4}% exceeds --max-error-rate {:.4}%",
            rate * 100.0,
            c.max_error_rate * 100.0
        );
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

fn run_subscribe(a: SubscribeArgs) -> Result<ExitCode, String> {
    positive("subscribers", a.subscribers)?;
    if !(a.rate > 0.0 && a.rate.is_finite()) {
        return Err("--rate must be positive".into());
    }
    let c = a.common;
    let target = Target::parse(&c.url)?;
    let n = naming(&c, &target, false);
    let marker_ip = subscribe::run_marker_ip();
    let st = engine::run_once(target.addr, subscribe::setup(&n, &marker_ip), 1, c.timeout);
    if st.error_count() > 0 {
        return Err(format!("setup failed: {:?}", st.errors));
    }
    let progress = Arc::new(Progress::default());
    let cfg = SubscribeConfig {
        naming: n,
        marker_ip,
        subscribers: a.subscribers,
        write_rate: a.rate,
        warmup: c.warmup,
        duration: c.duration,
        grace: a.grace,
        resubscribe: a.resubscribe,
        timeout: c.timeout,
        progress: Some(progress.clone()),
    };
    let printer = ProgressPrinter::start(&c, progress);
    let r = subscribe::run(&cfg);
    printer.stop();
    let r = r?;
    let mut notes = vec![format!(
        "{} subscribers on service {} (markers {}:10001..); push latency is one sample per write per subscriber",
        a.subscribers,
        subscribe::service(&cfg.naming),
        cfg.marker_ip
    )];
    if r.early > 0 {
        notes.push(format!(
            "{} push samples arrived before the write's ok was read (recorded as 0)",
            r.early
        ));
    }
    if r.datagrams == 0 {
        notes.push("no UDP datagrams received: does the server push to this User-Agent?".into());
    }
    let mut total = OpStats::default();
    total.merge(&r.writes);
    let report = Report {
        scenario: "subscribe".into(),
        url: c.url.clone(),
        connections: 2,
        threads: 1,
        rate: Some(a.rate),
        warmup: c.warmup,
        duration: c.duration,
        total,
        ops: vec![
            ("write".into(), r.writes),
            ("subscribe_query".into(), r.queries),
        ],
        push: Some(r.push),
        push_from_send: Some(r.push_from_send),
        datagrams: r.datagrams,
        wake: None,
        notes,
    };
    Ok(finish(&report, &c))
}

fn run_config_listen(a: ListenArgs) -> Result<ExitCode, String> {
    positive("listeners", a.listeners)?;
    if !(a.rate > 0.0 && a.rate.is_finite()) {
        return Err("--rate must be positive".into());
    }
    let keys = a.keys.unwrap_or(a.listeners);
    if keys == 0 || keys > a.listeners {
        return Err("--keys must be between 1 and --listeners".into());
    }
    let c = a.common;
    let api = ConfigApi {
        target: Target::parse(&c.url)?,
        user_agent: c.user_agent.clone(),
        prefix: config::run_prefix(&c.prefix),
    };
    let progress = Arc::new(Progress::default());
    let cfg = ListenConfig {
        api,
        listeners: a.listeners,
        keys,
        write_rate: a.rate,
        warmup: c.warmup,
        duration: c.duration,
        grace: a.grace,
        timeout: c.timeout,
        progress: Some(progress.clone()),
    };
    let printer = ProgressPrinter::start(&c, progress);
    let r = config::run_listen(&cfg);
    printer.stop();
    let r = r?;
    let mut notes = vec![format!(
        "{} polls over {keys} config(s) ({} per config); wake-up latency is one sample per answered poll",
        a.listeners,
        a.listeners / keys
    )];
    if r.held < a.listeners as u64 {
        notes.push(format!(
            "only {} of {} polls were sent before the first publish: raise --warmup",
            r.held, a.listeners
        ));
    }
    if r.early > 0 {
        notes.push(format!(
            "{} polls were answered before the publish's ok was read (recorded as 0)",
            r.early
        ));
    }
    let mut total = OpStats::default();
    total.merge(&r.writes);
    let report = Report {
        scenario: "config-listen".into(),
        url: c.url.clone(),
        connections: a.listeners + 1,
        threads: 1,
        rate: Some(a.rate),
        warmup: c.warmup,
        duration: c.duration,
        total,
        ops: vec![("publish".into(), r.writes)],
        push: None,
        push_from_send: None,
        datagrams: 0,
        wake: Some(Wakes {
            from_ok: r.wake,
            from_send: r.wake_from_send,
            held: r.held,
            expired: r.expired,
            poll_errors: r.poll_errors,
        }),
        notes,
    };
    Ok(finish(&report, &c))
}

/// Live progress on stderr, only when it is a terminal.
struct ProgressPrinter {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ProgressPrinter {
    fn start(c: &Common, p: Arc<Progress>) -> ProgressPrinter {
        let stop = Arc::new(AtomicBool::new(false));
        if c.no_progress || !std::io::stderr().is_terminal() {
            return ProgressPrinter { stop, handle: None };
        }
        let (warmup, total) = (c.warmup, c.warmup + c.duration);
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut last = (0u64, t0);
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let now = Instant::now();
                if now.duration_since(last.1) < Duration::from_secs(1) {
                    continue;
                }
                let ok = p.ok.load(Ordering::Relaxed);
                let err = p.errors.load(Ordering::Relaxed);
                let rps = (ok + err - last.0) as f64 / now.duration_since(last.1).as_secs_f64();
                last = (ok + err, now);
                let el = t0.elapsed();
                let phase = if el < warmup { "warm-up" } else { "run" };
                let mut e = std::io::stderr().lock();
                let _ = write!(
                    e,
                    "\r\x1b[K[{phase} {:>5.1}s/{:.0}s] ok {ok}  errors {err}  {rps:.0} req/s",
                    el.as_secs_f64(),
                    total.as_secs_f64()
                );
                let _ = e.flush();
            }
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        });
        ProgressPrinter {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_scenarios() {
        let cli = Cli::try_parse_from([
            "muster-bench",
            "list",
            "--url",
            "http://127.0.0.1:9",
            "--instances",
            "100",
            "--rate",
            "5000",
            "-c",
            "8",
            "--json",
        ])
        .unwrap();
        match cli.scenario {
            Scenario::List(a) => {
                assert_eq!(a.instances, 100);
                assert_eq!(a.load.rate, Some(5000.0));
                assert_eq!(a.load.connections, 8);
                assert!(a.common.json);
                assert_eq!(a.common.warmup, Duration::from_secs(2));
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["muster-bench", "mixed", "--mix", "list=1,beat=1"]).unwrap();
        assert!(matches!(cli.scenario, Scenario::Mixed(_)));
        assert!(Cli::try_parse_from(["muster-bench", "mixed", "--mix", "bogus=1"]).is_err());
        assert!(Cli::try_parse_from(["muster-bench", "register", "-d", "forever"]).is_err());
        let cli = Cli::try_parse_from(["muster-bench", "config-listen", "-n", "10000"]).unwrap();
        match cli.scenario {
            Scenario::ConfigListen(a) => assert_eq!((a.listeners, a.keys), (10_000, None)),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["muster-bench", "config-publish", "--configs", "1000"]);
        assert!(matches!(cli.unwrap().scenario, Scenario::ConfigPublish(a) if a.configs == 1000));
    }
}
