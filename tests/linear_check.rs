//! The linearizability checker of `tests/common/linear.rs` (issue 15) on known histories:
//! good ones that need overlapping operations reordered, bad ones (stale read, a value never
//! written, reads going backwards, an instance back without a register, a lost acknowledged
//! register), `Unknown` and `Fail` operations, the step budget, the per-key split, failure
//! shrinking, the threaded recorder, and random histories from real sequential executions
//! (all pass) with one read mutated to an impossible value (all fail).
//!
//! Its own test target, so its tests run once rather than in every binary that includes
//! `common`.

mod common;

use std::sync::{Arc, Mutex};

use common::linear::{
    check, check_ops, format_witness, ConfigOp, ConfigRegister, ConfigRet, History, Limits, Model,
    Op, OpOf, Outcome, ServiceOp, ServiceRet, ServiceSet, Verdict,
};
use common::Rng;

type COp = Op<ConfigOp, ConfigRet>;
type SOp = Op<ServiceOp, ServiceRet>;

/// An operation on key `k` over `[a, b]` that returned `out`.
fn ok<I, O>(client: usize, input: I, a: u64, b: u64, out: O) -> Op<I, O> {
    Op {
        client,
        key: "k".into(),
        input,
        outcome: Outcome::Ok(out),
        invoke: a,
        complete: Some(b),
    }
}

/// An operation on key `k` invoked at `a` whose effect is unknown.
fn unknown<I, O>(client: usize, input: I, a: u64) -> Op<I, O> {
    Op {
        client,
        key: "k".into(),
        input,
        outcome: Outcome::Unknown,
        invoke: a,
        complete: None,
    }
}

/// An operation on key `k` over `[a, b]` that was refused.
fn fail<I, O>(client: usize, input: I, a: u64, b: u64) -> Op<I, O> {
    Op {
        client,
        key: "k".into(),
        input,
        outcome: Outcome::Fail,
        invoke: a,
        complete: Some(b),
    }
}

fn publish(v: &str) -> ConfigOp {
    ConfigOp::Publish(v.into())
}

fn found(v: &str) -> ConfigRet {
    ConfigRet::Found(v.into())
}

fn reg(m: &str) -> ServiceOp {
    ServiceOp::Register(m.into())
}

fn dereg(m: &str) -> ServiceOp {
    ServiceOp::Deregister(m.into())
}

fn members(ms: &[&str]) -> ServiceRet {
    ServiceRet::members(ms.iter().copied())
}

fn config_verdict(ops: &[COp]) -> Verdict {
    check_ops(&ConfigRegister, ops, 1_000_000).0
}

fn service_verdict(ops: &[SOp]) -> Verdict {
    check_ops(&ServiceSet, ops, 1_000_000).0
}

#[test]
fn overlapping_config_ops_that_can_be_ordered_pass() {
    use ConfigOp::Get;
    // Two publishes overlap everything; the reads see b, then a, then a.
    let h = vec![
        ok(1, publish("a"), 0, 100, ConfigRet::Done),
        ok(2, publish("b"), 10, 90, ConfigRet::Done),
        ok(3, Get, 20, 30, found("b")),
        ok(3, Get, 40, 50, found("a")),
        ok(4, Get, 60, 70, found("a")),
        ok(5, Get, 0, 5, ConfigRet::NotFound),
    ];
    assert_eq!(config_verdict(&h), Verdict::Linearizable);
    // A read overlapping a delete may see either side of it.
    let h = vec![
        ok(1, publish("a"), 0, 10, ConfigRet::Done),
        ok(2, ConfigOp::Delete, 20, 40, ConfigRet::Done),
        ok(3, Get, 25, 30, found("a")),
        ok(4, Get, 26, 35, ConfigRet::NotFound),
        ok(3, Get, 50, 60, ConfigRet::NotFound),
    ];
    assert_eq!(config_verdict(&h), Verdict::Linearizable);
    // An empty history and one of only refused ops are linearizable.
    assert_eq!(config_verdict(&[]), Verdict::Linearizable);
    assert_eq!(
        config_verdict(&[fail(1, publish("x"), 0, 1)]),
        Verdict::Linearizable
    );
}

#[test]
fn overlapping_service_ops_that_can_be_ordered_pass() {
    use ServiceOp::Read;
    let h = vec![
        ok(1, reg("10.0.0.1:80"), 0, 50, ServiceRet::Done),
        ok(2, reg("10.0.0.2:80"), 10, 20, ServiceRet::Done),
        ok(3, Read, 15, 25, members(&["10.0.0.2:80"])),
        ok(3, Read, 30, 40, members(&["10.0.0.1:80", "10.0.0.2:80"])),
        ok(4, dereg("10.0.0.2:80"), 45, 70, ServiceRet::Done),
        ok(5, Read, 50, 60, members(&["10.0.0.1:80", "10.0.0.2:80"])),
        ok(5, Read, 61, 65, members(&["10.0.0.1:80"])),
        ok(5, Read, 80, 90, members(&["10.0.0.1:80"])),
        // Registering twice is idempotent.
        ok(6, reg("10.0.0.1:80"), 91, 92, ServiceRet::Done),
        ok(6, Read, 93, 94, members(&["10.0.0.1:80"])),
    ];
    assert_eq!(service_verdict(&h), Verdict::Linearizable);
}

#[test]
fn a_stale_read_after_a_completed_write_fails() {
    let h = vec![
        ok(1, publish("a"), 0, 10, ConfigRet::Done),
        ok(1, publish("b"), 20, 30, ConfigRet::Done),
        ok(2, ConfigOp::Get, 40, 50, found("a")),
    ];
    assert_eq!(config_verdict(&h), Verdict::Illegal);
}

#[test]
fn a_read_of_a_value_never_written_fails() {
    let h = vec![
        ok(1, publish("a"), 0, 10, ConfigRet::Done),
        ok(2, ConfigOp::Get, 5, 50, found("x")),
    ];
    assert_eq!(config_verdict(&h), Verdict::Illegal);
    assert_eq!(
        config_verdict(&[ok(2, ConfigOp::Get, 5, 50, found("x"))]),
        Verdict::Illegal
    );
}

#[test]
fn two_sequential_reads_going_backwards_fail() {
    // The write of b overlaps both reads, but once b was seen a cannot come back.
    let h = vec![
        ok(1, publish("a"), 0, 10, ConfigRet::Done),
        ok(2, publish("b"), 20, 100, ConfigRet::Done),
        ok(3, ConfigOp::Get, 30, 40, found("b")),
        ok(4, ConfigOp::Get, 50, 60, found("a")),
    ];
    assert_eq!(config_verdict(&h), Verdict::Illegal);
    // The reads in the other order (a, then b) are fine.
    let h = vec![
        ok(1, publish("a"), 0, 10, ConfigRet::Done),
        ok(2, publish("b"), 20, 100, ConfigRet::Done),
        ok(3, ConfigOp::Get, 30, 40, found("a")),
        ok(4, ConfigOp::Get, 50, 60, found("b")),
    ];
    assert_eq!(config_verdict(&h), Verdict::Linearizable);
}

#[test]
fn a_deregistered_instance_reappearing_without_a_register_fails() {
    let h = vec![
        ok(1, reg("10.0.0.1:80"), 0, 10, ServiceRet::Done),
        ok(1, dereg("10.0.0.1:80"), 20, 30, ServiceRet::Done),
        ok(2, ServiceOp::Read, 40, 50, members(&["10.0.0.1:80"])),
    ];
    assert_eq!(service_verdict(&h), Verdict::Illegal);
    // With a register of it that may still be landing, it is fine.
    let mut h = h;
    h.push(unknown(3, reg("10.0.0.1:80"), 35));
    assert_eq!(service_verdict(&h), Verdict::Linearizable);
}

#[test]
fn a_lost_acknowledged_register_fails() {
    let h = vec![
        ok(1, reg("10.0.0.1:80"), 0, 10, ServiceRet::Done),
        ok(1, reg("10.0.0.2:80"), 11, 15, ServiceRet::Done),
        ok(2, ServiceOp::Read, 20, 30, members(&["10.0.0.2:80"])),
    ];
    assert_eq!(service_verdict(&h), Verdict::Illegal);
    let h = vec![
        ok(1, reg("10.0.0.1:80"), 0, 10, ServiceRet::Done),
        ok(2, ServiceOp::Read, 20, 30, members(&[])),
    ];
    assert_eq!(service_verdict(&h), Verdict::Illegal);
}

#[test]
fn an_unknown_write_may_or_may_not_apply_but_only_once_and_only_after_its_invocation() {
    use ConfigOp::Get;
    let base = || {
        vec![
            ok(1, publish("a"), 0, 10, ConfigRet::Done),
            unknown(2, publish("b"), 20),
        ]
    };
    // Never applied.
    let mut h = base();
    h.push(ok(3, Get, 30, 40, found("a")));
    h.push(ok(3, Get, 1_000, 1_010, found("a")));
    assert_eq!(config_verdict(&h), Verdict::Linearizable);
    // Applied, long after the client gave up.
    let mut h = base();
    h.push(ok(3, Get, 30, 40, found("a")));
    h.push(ok(3, Get, 1_000, 1_010, found("b")));
    assert_eq!(config_verdict(&h), Verdict::Linearizable);
    // Applied once: it cannot be seen, then unseen, then seen again.
    let mut h = base();
    h.push(ok(3, Get, 30, 40, found("b")));
    h.push(ok(3, Get, 50, 60, found("a")));
    h.push(ok(3, Get, 70, 80, found("b")));
    assert_eq!(config_verdict(&h), Verdict::Illegal);
    // Not before its invocation.
    let mut h = base();
    h.push(ok(3, Get, 12, 18, found("b")));
    assert_eq!(config_verdict(&h), Verdict::Illegal);
    // An unknown delete, both ways.
    for seen in [found("a"), ConfigRet::NotFound] {
        let h = vec![
            ok(1, publish("a"), 0, 10, ConfigRet::Done),
            unknown(2, ConfigOp::Delete, 20),
            ok(3, Get, 30, 40, seen),
        ];
        assert_eq!(config_verdict(&h), Verdict::Linearizable);
    }
    // An unknown read says nothing.
    let h = vec![
        ok(1, publish("a"), 0, 10, ConfigRet::Done),
        unknown(3, Get, 30),
    ];
    assert_eq!(config_verdict(&h), Verdict::Linearizable);
}

#[test]
fn an_unknown_register_may_or_may_not_apply() {
    for seen in [members(&[]), members(&["10.0.0.1:80"])] {
        let h = vec![
            unknown(1, reg("10.0.0.1:80"), 0),
            ok(2, ServiceOp::Read, 30, 40, seen),
        ];
        assert_eq!(service_verdict(&h), Verdict::Linearizable);
    }
    // An unknown deregister of an acknowledged register, both ways; but not undone later.
    let h = vec![
        ok(1, reg("10.0.0.1:80"), 0, 10, ServiceRet::Done),
        unknown(1, dereg("10.0.0.1:80"), 20),
        ok(2, ServiceOp::Read, 30, 40, members(&["10.0.0.1:80"])),
        ok(2, ServiceOp::Read, 50, 60, members(&[])),
        ok(2, ServiceOp::Read, 70, 80, members(&["10.0.0.1:80"])),
    ];
    assert_eq!(service_verdict(&h[..4]), Verdict::Linearizable);
    assert_eq!(service_verdict(&h), Verdict::Illegal);
}

#[test]
fn a_failed_write_never_happened() {
    let h = vec![
        ok(1, publish("a"), 0, 10, ConfigRet::Done),
        fail(2, publish("b"), 20, 30),
        ok(3, ConfigOp::Get, 25, 40, found("b")),
    ];
    assert_eq!(config_verdict(&h), Verdict::Illegal);
    let h = vec![
        ok(1, publish("a"), 0, 10, ConfigRet::Done),
        fail(2, publish("b"), 20, 30),
        ok(3, ConfigOp::Get, 25, 40, found("a")),
    ];
    assert_eq!(config_verdict(&h), Verdict::Linearizable);
}

#[test]
fn equal_times_count_as_overlapping() {
    // The read starts at the very instant the write completes: either order is allowed.
    let h = vec![
        ok(1, publish("a"), 0, 5, ConfigRet::Done),
        ok(1, publish("b"), 10, 20, ConfigRet::Done),
        ok(2, ConfigOp::Get, 20, 30, found("a")),
    ];
    assert_eq!(config_verdict(&h), Verdict::Linearizable);
    let h = vec![
        ok(1, publish("a"), 0, 5, ConfigRet::Done),
        ok(1, publish("b"), 10, 20, ConfigRet::Done),
        ok(2, ConfigOp::Get, 21, 30, found("a")),
    ];
    assert_eq!(config_verdict(&h), Verdict::Illegal);
}

#[test]
fn outcomes_of_http_write_answers_are_conservative() {
    assert_eq!(Outcome::of_write(Some(200), ()), Outcome::Ok(()));
    assert_eq!(Outcome::of_write(Some(400), ()), Outcome::Fail);
    assert_eq!(Outcome::of_write(Some(403), ()), Outcome::Fail);
    for s in [None, Some(0), Some(408), Some(500), Some(503)] {
        assert_eq!(Outcome::of_write(s, ()), Outcome::Unknown, "{s:?}");
    }
}

#[test]
fn the_step_budget_bounds_the_work() {
    // Ten concurrent unknown publishes, each read once in turn, then a read of a value
    // none of them wrote: the search must try every subset of them before giving up.
    let mut h: Vec<COp> = (0..10)
        .map(|i| unknown(i, publish(&format!("v{i}")), i as u64))
        .collect();
    for i in 0..10 {
        let t = 100 + 20 * i;
        h.push(ok(20, ConfigOp::Get, t, t + 10, found(&format!("v{i}"))));
    }
    h.push(ok(20, ConfigOp::Get, 1_000, 1_010, found("never")));
    let (v, steps) = check_ops(&ConfigRegister, &h, 100);
    assert_eq!(v, Verdict::Unknown);
    assert!(steps <= 101, "{steps}");
    let (v, steps) = check_ops(&ConfigRegister, &h, 10_000_000);
    assert_eq!(v, Verdict::Illegal);
    eprintln!("exhausting 10 unknown writes took {steps} steps");
    let report = check(
        &ConfigRegister,
        &h,
        Limits {
            steps_per_key: 100,
            shrink_steps: 100,
        },
    );
    assert_eq!(report.verdict(), Verdict::Unknown);
    assert!(report.to_string().contains("undecided"), "{report}");
}

#[test]
fn keys_are_checked_independently() {
    let on = |key: &str, mut o: COp| {
        o.key = key.into();
        o
    };
    let h = vec![
        on("a", ok(1, publish("x"), 0, 10, ConfigRet::Done)),
        // Key b never saw a write: x on a says nothing about b.
        on("b", ok(2, ConfigOp::Get, 20, 30, ConfigRet::NotFound)),
        on("a", ok(2, ConfigOp::Get, 20, 30, found("x"))),
        on("c", ok(1, publish("y"), 0, 10, ConfigRet::Done)),
        on("c", ok(3, ConfigOp::Get, 40, 50, found("x"))),
    ];
    let r = check(&ConfigRegister, &h, Limits::default());
    assert_eq!(r.verdict(), Verdict::Illegal);
    assert_eq!(r.illegal_keys(), vec!["c"]);
    assert_eq!(r.keys.len(), 3);
    let text = r.to_string();
    assert!(text.contains("key \"c\": not linearizable"), "{text}");
    assert!(!text.contains("key \"a\""), "{text}");
    let failed = std::panic::catch_unwind(|| r.assert_linearizable());
    assert!(failed.is_err());
}

#[test]
fn a_failure_is_shrunk_to_a_small_witness_that_fails_alone() {
    // 40 sequential publish+get pairs, then two overlapping writers and finally a stale read.
    let mut h: Vec<COp> = Vec::new();
    for i in 0..40u64 {
        let v = format!("v{i}");
        h.push(ok(1, publish(&v), i * 100, i * 100 + 10, ConfigRet::Done));
        h.push(ok(2, ConfigOp::Get, i * 100 + 20, i * 100 + 30, found(&v)));
    }
    h.push(ok(3, publish("late"), 4_000, 4_100, ConfigRet::Done));
    h.push(ok(2, ConfigOp::Get, 4_050, 4_060, found("v39")));
    h.push(ok(2, ConfigOp::Get, 4_200, 4_210, found("v39")));
    h.push(ok(2, ConfigOp::Get, 4_300, 4_310, found("late")));
    let r = check(&ConfigRegister, &h, Limits::default());
    assert_eq!(r.verdict(), Verdict::Illegal);
    let k = &r.keys[0];
    let w = k.witness.as_ref().expect("a witness");
    assert!(w.ops.len() < 10, "{}", format_witness(&k.key, k.ops, w));
    assert!(w.dropped_reads > 0);
    assert_eq!(
        check_ops(&ConfigRegister, &w.ops, 1_000_000).0,
        Verdict::Illegal
    );
    // The stale read is in it, and the text shows it.
    assert!(w
        .ops
        .iter()
        .any(|o| o.invoke == 4_200 && o.outcome == Outcome::Ok(found("v39"))));
    let text = r.to_string();
    assert!(text.contains("Found(\"v39\")"), "{text}");
    eprintln!("{text}");
}

#[test]
fn the_recorder_times_threads_and_checks_what_they_did() {
    let history: Arc<History<ConfigOp, ConfigRet>> = Arc::new(History::new());
    let store: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let threads: Vec<_> = (0..4)
        .map(|c| {
            let (history, store) = (history.clone(), store.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    if i % 3 == 0 {
                        let v = format!("c{c}-{i}");
                        history.record(c, "k", publish(&v), || {
                            *store.lock().unwrap() = Some(v.clone());
                            Outcome::Ok(ConfigRet::Done)
                        });
                    } else {
                        history.record(c, "k", ConfigOp::Get, || {
                            Outcome::Ok(match store.lock().unwrap().clone() {
                                Some(v) => ConfigRet::Found(v),
                                None => ConfigRet::NotFound,
                            })
                        });
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(history.len(), 200);
    for o in history.ops() {
        assert!(o.complete.expect("completed") >= o.invoke);
    }
    history
        .check(&ConfigRegister, Limits::default())
        .assert_linearizable();
    // An acknowledged publish that the store lost, then a read: caught.
    history.record(9, "k", publish("lost"), || Outcome::Ok(ConfigRet::Done));
    history.record(9, "k", ConfigOp::Get, || {
        Outcome::Ok(ConfigRet::Found(store.lock().unwrap().clone().unwrap()))
    });
    // A pending op never completed stays unknown and does not matter.
    let _ = history.invoke(9, "k", publish("pending"));
    let r = history.check(&ConfigRegister, Limits::default());
    assert_eq!(r.verdict(), Verdict::Illegal, "{r}");
}

/// A random history of `model` over 3 keys from a real sequential execution: operation `j`
/// takes effect at `10 j + 5`, inside an interval reaching up to 40 either side, so
/// neighbours overlap. Some writes are lost or refused (recorded `Unknown` or `Fail`, never
/// applied), some are applied with an `Unknown` outcome, some reads are `Unknown`.
fn random_history<M: Model>(
    model: &M,
    rng: &mut Rng,
    n: u64,
    mut input: impl FnMut(&mut Rng, u64) -> M::Input,
) -> Vec<Op<M::Input, M::Output>> {
    let keys = ["k0", "k1", "k2"];
    let mut states: Vec<M::State> = keys.iter().map(|_| model.init()).collect();
    let mut h = Vec::new();
    for j in 0..n {
        let k = rng.below(keys.len() as u64) as usize;
        let input = input(rng, j);
        let t = 10 * j + 5;
        let invoke = t.saturating_sub(rng.below(41));
        let complete = t + rng.below(41);
        let fate = rng.below(20);
        let read = model.is_read(&input);
        let applied = read || fate >= 3;
        let out = if applied {
            let (next, out) = model.apply(&states[k], &input);
            states[k] = next;
            Some(out)
        } else {
            None
        };
        let outcome = match (fate, out) {
            (0 | 1, _) | (3, _) => Outcome::Unknown,
            (2, None) => Outcome::Fail,
            (_, Some(out)) => Outcome::Ok(out),
            (_, None) => unreachable!(),
        };
        h.push(Op {
            client: rng.below(8) as usize,
            key: keys[k].into(),
            input,
            outcome,
            invoke,
            complete: Some(complete),
        });
    }
    h
}

/// Checks 200 random histories of `model`: each passes, and fails once `mutate` turns one
/// `Ok` read into an impossible answer.
fn random_histories_pass_and_fail_when_mutated<M: Model>(
    model: &M,
    seed: u64,
    input: impl FnMut(&mut Rng, u64) -> M::Input + Copy,
    impossible: M::Output,
) {
    let mut rng = Rng(seed);
    let mut mutated = 0;
    for round in 0..200 {
        let mut h = random_history(model, &mut rng, 60, input);
        let r = check(model, &h, Limits::default());
        assert_eq!(
            r.verdict(),
            Verdict::Linearizable,
            "round {round}: {r}\n{h:#?}"
        );
        let reads: Vec<usize> = (0..h.len())
            .filter(|&i| model.is_read(&h[i].input) && matches!(h[i].outcome, Outcome::Ok(_)))
            .collect();
        if reads.is_empty() {
            continue;
        }
        let i = reads[rng.below(reads.len() as u64) as usize];
        h[i].outcome = Outcome::Ok(impossible.clone());
        let r = check(model, &h, Limits::default());
        assert_eq!(r.verdict(), Verdict::Illegal, "round {round}: {r}");
        assert_eq!(r.illegal_keys(), vec![h[i].key.as_str()]);
        mutated += 1;
    }
    assert!(mutated > 150, "{mutated}");
}

#[test]
fn random_config_histories_pass_and_an_impossible_read_fails() {
    random_histories_pass_and_fail_when_mutated(
        &ConfigRegister,
        1,
        |rng, j| match rng.below(10) {
            0..=3 => ConfigOp::Publish(format!("v{j}")),
            4 => ConfigOp::Delete,
            _ => ConfigOp::Get,
        },
        ConfigRet::Found("never written".into()),
    );
}

#[test]
fn random_service_histories_pass_and_an_impossible_read_fails() {
    random_histories_pass_and_fail_when_mutated(
        &ServiceSet,
        2,
        |rng, _| {
            let m = format!("10.0.0.{}:8080", rng.below(4));
            match rng.below(10) {
                0..=2 => ServiceOp::Register(m),
                3 | 4 => ServiceOp::Deregister(m),
                _ => ServiceOp::Read,
            }
        },
        ServiceRet::members(["10.0.0.1:8080", "10.9.9.9:1"]),
    );
}

/// The definition, by brute force: some order of a subset of the kept operations, holding
/// every `Ok` one and any of the `Unknown` ones, that respects real time (an `Ok` operation
/// completed before another's invocation comes first) and replays to the recorded outputs.
fn brute_force<M: Model>(model: &M, h: &[OpOf<M>], init: M::State) -> bool {
    let kept: Vec<&OpOf<M>> = h
        .iter()
        .filter(|o| match o.outcome {
            Outcome::Ok(_) => true,
            Outcome::Fail => false,
            Outcome::Unknown => !model.is_read(&o.input),
        })
        .collect();
    fn go<M: Model>(model: &M, kept: &[&OpOf<M>], used: &mut Vec<bool>, state: M::State) -> bool {
        // Every Ok op placed: the unplaced unknown ones never happened.
        let all_ok_placed = kept
            .iter()
            .zip(used.iter())
            .all(|(o, &u)| u || !matches!(o.outcome, Outcome::Ok(_)));
        if all_ok_placed {
            return true;
        }
        for i in 0..kept.len() {
            if used[i] {
                continue;
            }
            // `i` may go next only if no unplaced Ok op completed before it was invoked.
            let blocked = (0..kept.len()).any(|j| {
                !used[j]
                    && j != i
                    && matches!(kept[j].outcome, Outcome::Ok(_))
                    && kept[j].complete.unwrap() < kept[i].invoke
            });
            if blocked {
                continue;
            }
            let (next, out) = model.apply(&state, &kept[i].input);
            if let Outcome::Ok(want) = &kept[i].outcome {
                if *want != out {
                    continue;
                }
            }
            used[i] = true;
            let found = go(model, kept, used, next);
            used[i] = false;
            if found {
                return true;
            }
        }
        false
    }
    go(model, &kept, &mut vec![false; kept.len()], init)
}

#[test]
fn small_random_histories_agree_with_brute_force() {
    let mut rng = Rng(3);
    let (mut legal, mut illegal, mut splits) = (0, 0, 0);
    for round in 0..1_500 {
        let n = 2 + rng.below(5);
        let h: Vec<COp> = (0..n)
            .map(|i| {
                let input = match rng.below(5) {
                    0 => publish("a"),
                    1 => publish("b"),
                    2 => ConfigOp::Delete,
                    _ => ConfigOp::Get,
                };
                let out = match input {
                    ConfigOp::Get => match rng.below(3) {
                        0 => found("a"),
                        1 => found("b"),
                        _ => ConfigRet::NotFound,
                    },
                    _ => ConfigRet::Done,
                };
                let invoke = rng.below(20);
                let complete = invoke + rng.below(10);
                match rng.below(8) {
                    0 => unknown(i as usize, input, invoke),
                    1 => fail(i as usize, input, invoke, complete),
                    _ => ok(i as usize, input, invoke, complete, out),
                }
            })
            .collect();
        let want = brute_force(&ConfigRegister, &h, None);
        let r = check(&ConfigRegister, &h, Limits::default());
        let got = r.verdict();
        assert_eq!(
            got == Verdict::Linearizable,
            want,
            "round {round}: checker {got:?}, brute force {want}\n{h:#?}"
        );
        if want {
            legal += 1;
        } else {
            illegal += 1;
            // The witness fails on its own, from each start state a split left.
            let w = r.keys[0].witness.as_ref().expect("a witness");
            splits += usize::from(w.split.is_some());
            let starts: Vec<Option<String>> = match &w.split {
                None => vec![None],
                Some((_, states)) => states
                    .iter()
                    .map(|s| match s.as_str() {
                        "None" => None,
                        s => Some(s[6..s.len() - 2].to_string()),
                    })
                    .collect(),
            };
            for start in starts {
                assert!(
                    !brute_force(&ConfigRegister, &w.ops, start.clone()),
                    "{start:?}: {r}"
                );
            }
        }
    }
    assert!(
        legal > 300 && illegal > 300,
        "{legal} legal, {illegal} illegal"
    );
    assert!(splits > 50, "{splits} witnesses split");
}

#[test]
fn small_random_service_histories_agree_with_brute_force() {
    let mut rng = Rng(4);
    let (mut legal, mut illegal) = (0, 0);
    let ms = ["10.0.0.1:80", "10.0.0.2:80"];
    for round in 0..1_500 {
        let n = 2 + rng.below(5);
        let h: Vec<SOp> = (0..n)
            .map(|i| {
                let m = ms[usize::from(rng.below(4) == 0)];
                let input = match rng.below(4) {
                    0 => reg(m),
                    1 => dereg(m),
                    _ => ServiceOp::Read,
                };
                let out = match input {
                    ServiceOp::Read => {
                        let seen: Vec<&str> =
                            ms.iter().copied().filter(|_| rng.below(2) == 0).collect();
                        members(&seen)
                    }
                    _ => ServiceRet::Done,
                };
                let invoke = rng.below(20);
                let complete = invoke + rng.below(10);
                match rng.below(4) {
                    0 => unknown(i as usize, input, invoke),
                    1 => fail(i as usize, input, invoke, complete),
                    _ => ok(i as usize, input, invoke, complete, out),
                }
            })
            .collect();
        let want = brute_force(&ServiceSet, &h, Default::default());
        let got = check(&ServiceSet, &h, Limits::default()).verdict();
        assert_eq!(
            got == Verdict::Linearizable,
            want,
            "round {round}: checker {got:?}, brute force {want}\n{h:#?}"
        );
        if want {
            legal += 1;
        } else {
            illegal += 1;
        }
    }
    assert!(
        legal > 300 && illegal > 300,
        "{legal} legal, {illegal} illegal"
    );
}

#[test]
fn a_long_history_is_decided_within_the_default_budget() {
    // 1 200 operations over 3 keys (what a process test of a minute or two records), about
    // a tenth of the writes unknown: decided, both ways, without running out of steps.
    let mut rng = Rng(5);
    let input = |rng: &mut Rng, j: u64| match rng.below(10) {
        0..=3 => ConfigOp::Publish(format!("v{j}")),
        4 => ConfigOp::Delete,
        _ => ConfigOp::Get,
    };
    let mut h = random_history(&ConfigRegister, &mut rng, 1_200, input);
    let t = std::time::Instant::now();
    let r = check(&ConfigRegister, &h, Limits::default());
    let steps: u64 = r.keys.iter().map(|k| k.steps).sum();
    eprintln!("linearizable: {steps} steps in {:?}", t.elapsed());
    assert_eq!(r.verdict(), Verdict::Linearizable, "{r}");
    // A stale read near the end: the last read of k0 sees the first value k0 ever read.
    let reads: Vec<usize> = (0..h.len())
        .filter(|&i| h[i].key == "k0" && h[i].input == ConfigOp::Get)
        .filter(|&i| matches!(h[i].outcome, Outcome::Ok(ConfigRet::Found(_))))
        .collect();
    let first = h[reads[0]].outcome.clone();
    let last = *reads.last().unwrap();
    h[last].outcome = first;
    let t = std::time::Instant::now();
    let r = check(&ConfigRegister, &h, Limits::default());
    eprintln!("{r}in {:?}", t.elapsed());
    assert_eq!(r.verdict(), Verdict::Illegal, "{r}");
    let w = r.keys[0].witness.as_ref().unwrap();
    assert!(w.ops.len() < 20, "{r}");
}
