//! A linearizability checker for the process tests (issue 15): clients record every operation
//! with its invocation and completion times in a [`History`], and [`check`] decides whether
//! some sequential execution of a [`Model`] explains it.
//!
//! # What a history means
//!
//! Each [`Op`] is one client call: `invoke` is taken before the request is sent, `complete`
//! after the reply is read (both monotonic, in nanoseconds since the history began), so the
//! call really took effect, if at all, somewhere inside `[invoke, complete]`. Its
//! [`Outcome`] is
//!
//! * `Ok(output)`: it took effect at one instant inside its interval and returned `output`;
//! * `Fail`: it definitely took no effect (refused before anything was proposed). The checker
//!   drops it, as if it never happened;
//! * `Unknown`: a timeout, a dropped connection, a 5xx after the write may have been proposed.
//!   It took effect at most once, at any instant after `invoke` — possibly long after the
//!   client gave up — or never. Its completion time is +∞ for the checker (as in porcupine);
//!   its output is never compared. An `Unknown` read is dropped: it cannot change the state.
//!
//! A history is *linearizable* when the kept operations can be put in one sequence that
//! (1) respects real time — if `a.complete < b.invoke` then `a` comes before `b` (equal times
//! count as overlapping, which only ever accepts more) — and (2) replayed through the model
//! from its initial state gives every `Ok` operation exactly its recorded output. An `Unknown`
//! operation may be left out of the sequence; leaving it out is the same as putting it last,
//! since nothing after it is observed.
//!
//! # The algorithm
//!
//! P-compositionality: a history of independent objects (one config key, one service) is
//! linearizable iff each object's sub-history is, so [`check`] partitions by [`Op::key`] and
//! checks every key on its own, which keeps each search small.
//!
//! Per key it is Wing & Gong's search with Lowe's memoisation, as in porcupine: the call and
//! return events are sorted by time into a doubly linked list (calls before returns at equal
//! times; `Unknown` returns at +∞, after every other event). Walking the list from its head,
//! a call whose operation the model accepts in the current state is *linearized*: its call and
//! return are unlinked (dancing links), `(operation, previous state)` is pushed on a stack, and
//! the walk restarts from the head. Meeting a return means that operation should already have
//! been linearized: the last choice is undone (pop, relink, restore the state) and the walk
//! goes on after the undone call. The history is linearizable when the list is empty or the
//! first remaining return is an `Unknown` one (every definite operation is placed; the rest
//! never happened, or happened last); it is not when a return is met with an empty stack.
//!
//! Memoisation: a configuration is the set of linearized operations (a bitset) together with
//! the model state; two paths reaching the same configuration have the same future, so a
//! configuration already explored is never explored again. Every loop iteration is one step;
//! past [`Limits::steps_per_key`] the key's verdict is [`Verdict::Unknown`] instead of running
//! on (the search is exponential in the worst case).
//!
//! `Unknown` writes are what makes the search expensive: each stays pending to the end and
//! may be applied at every later point. Two reductions, both exact (they never change a
//! verdict), keep that in check when deciding:
//!
//! * deadlines ([`Model::seen_until`]): after the last answer that could show its effect,
//!   applying an `Unknown` write changes no answer, so its return is placed there; meeting it
//!   unplaced *drops* it (it never happened, a step that is undone like any other). One
//!   nobody could see at all is left out;
//! * symmetry: of several pending `Unknown` ops with the same input only the one with the
//!   earliest deadline is tried at a point (swapping two such ops in a linearization gives
//!   another one).
//!
//! # Explaining a failure
//!
//! For a key that is not linearizable the report carries a small sub-history that is not
//! linearizable either, found only by transformations that can never turn a linearizable
//! history into a non-linearizable one, so the witness really explains the failure:
//!
//! * a *cut* at time `T`: keep the operations invoked at or before `T`; those still running at
//!   `T` become `Unknown` (reads among them are dropped). Sound because every operation
//!   invoked after `T` is linearized after every one completed by `T`. Being non-linearizable
//!   is monotone in `T`, so the earliest failing cut is found by binary search;
//! * a *split* at time `Q`: enumerate every state a linearization of the operations invoked
//!   before `Q` can end in (those still running at `Q` optional, as in a cut); keep the
//!   operations invoked from `Q` on, plus the earlier ones not completed before `Q` as
//!   `Unknown`. If these fail from every such state, the whole fails: any linearization
//!   places every operation completed before `Q` ahead of every one invoked after it, so
//!   its prefix ends in one of those states, and the rest is accepted by the (more
//!   permissive) suffix. The latest failing split is found by binary search among the
//!   invocation times, and kept only when it leaves few states to print;
//! * dropping a read (an operation that never changes the state).
//!
//! Every candidate is checked and kept only if it fails, so the witness is sound whatever
//! the shrinking budget; the budget only decides how small it gets.

//! # Use from a process test
//!
//! ```text
//! let configs = Arc::new(History::<ConfigOp, ConfigRet>::new());
//! // client thread `c`, talking to servers[c % 3] while another thread kills and partitions:
//! let cl = Client::new(servers[c % 3].addr);
//! let v = format!("c{c}-{i}");
//! let body = format!("dataId=app&group=G&content={v}");
//! configs.record(c, "G/app", ConfigOp::Publish(v), || {
//!     Outcome::of_write(cl.request("POST", "/nacos/v1/cs/configs", &body).map(|r| r.0), ConfigRet::Done)
//! });
//! configs.record(c, "G/app", ConfigOp::Get, || match cl.request("GET", "/nacos/v1/cs/configs?dataId=app&group=G", "") {
//!     Some((200, text)) => Outcome::Ok(ConfigRet::Found(text)),
//!     Some((404, _)) => Outcome::Ok(ConfigRet::NotFound),
//!     _ => Outcome::Unknown, // a failed read says nothing
//! });
//! // after joining the clients:
//! configs.check(&ConfigRegister, Limits::default()).assert_no_violation();
//! ```
//!
//! Services work the same way with `History<ServiceOp, ServiceRet>` and [`ServiceSet`], a read
//! recording `ServiceRet::members(hosts.map(|h| format!("{ip}:{port}")))`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::{self, Debug, Write as _};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// A sequential specification of one object. It must be deterministic: one state and one
/// input give one next state and one output.
pub trait Model {
    /// What a client asks.
    type Input: Clone + Debug + PartialEq;
    /// What the object answers.
    type Output: Clone + Debug + PartialEq;
    /// The object's state (hashed for memoisation).
    type State: Clone + Eq + Hash + Debug;

    /// The state of every key before any operation.
    fn init(&self) -> Self::State;
    /// Applies `input` to `state`: the next state and the answer.
    fn apply(&self, state: &Self::State, input: &Self::Input) -> (Self::State, Self::Output);
    /// Whether `input` never changes the state (a read). Unknown reads are dropped, and reads
    /// may be dropped when shrinking a failure. `false` is always safe.
    fn is_read(&self, _input: &Self::Input) -> bool {
        false
    }
    /// A deadline for an `Unknown` write of `input`, from `observed` (every `Ok` answer on
    /// its key with its completion time): a time `d` such that applying the write at any
    /// instant after `d` changes no answer, so it took effect by `d` or may be taken as
    /// never. It must hold that every answer that could show the write's effect completed
    /// by `d`: then, applied later, the next read would not show it, so a write that hides
    /// it again comes first, and leaving it out changes nothing. `d` before the invocation
    /// means no answer shows it at all: it is left out. `None` (no deadline) is always
    /// safe; a deadline only saves search, as a pending write is otherwise tried at every
    /// step after its invocation. Used when deciding, never when enumerating end states.
    fn seen_until(&self, _input: &Self::Input, _observed: &[(&Self::Output, u64)]) -> Option<u64> {
        None
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<O> {
    /// Took effect once, inside its interval, with this answer.
    Ok(O),
    /// Definitely took no effect (refused before anything was proposed).
    Fail,
    /// May have taken effect once at any time after its invocation, or never.
    Unknown,
}

impl<O> Outcome<O> {
    /// The conservative reading of a write's HTTP answer: 200 is `Ok(ok)`, a 4xx other than
    /// 408 is `Fail`, everything else — no answer (`None` or status 0), 408, any 5xx — is
    /// `Unknown`. A 503 is `Unknown` too: muster answers 503 also after forwarding a write
    /// whose answer did not come back in time (`node/distro.rs`), so it may have applied.
    /// A test that knows a refusal came before any proposal may record `Fail` itself.
    pub fn of_write(status: Option<u16>, ok: O) -> Outcome<O> {
        match status {
            Some(200) => Outcome::Ok(ok),
            Some(s) if (400..500).contains(&s) && s != 408 => Outcome::Fail,
            _ => Outcome::Unknown,
        }
    }
}

/// One recorded operation on one key. Times are nanoseconds since the history began.
#[derive(Clone, Debug)]
pub struct Op<I, O> {
    /// Which client (thread) issued it: only for printing.
    pub client: usize,
    /// The object it addresses; keys are checked independently.
    pub key: String,
    /// The request.
    pub input: I,
    /// How it ended.
    pub outcome: Outcome<O>,
    /// Taken before the request was sent.
    pub invoke: u64,
    /// Taken after the answer was read; `None` while pending. Ignored for `Unknown`
    /// (the checker uses +∞) and kept only for printing. `Ok` and `Fail` need it.
    pub complete: Option<u64>,
}

/// An operation of model `M`.
pub type OpOf<M> = Op<<M as Model>::Input, <M as Model>::Output>;

/// The verdict on one key or a whole history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some sequential execution explains it.
    Linearizable,
    /// None does.
    Illegal,
    /// The step budget ran out before the search ended.
    Unknown,
}

/// Work bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Search steps per key before that key's verdict is `Unknown`.
    pub steps_per_key: u64,
    /// Search steps per failing key spent on shrinking its witness (the search that found
    /// the failure is not counted). When they run out the witness is just less small.
    pub shrink_steps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            steps_per_key: 10_000_000,
            shrink_steps: 5_000_000,
        }
    }
}

/// A set of operation indices, the linearized set of a search configuration.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

const NIL: usize = usize::MAX;

/// Checks one key's operations (their `key` is ignored) from the model's initial state with
/// at most `budget` steps. Returns the verdict and the steps spent.
pub fn check_ops<M: Model>(model: &M, ops: &[OpOf<M>], budget: u64) -> (Verdict, u64) {
    let f = search(model, model.init(), ops, budget, false);
    (f.verdict, f.steps)
}

/// Like [`check_ops`] from any one of `starts`: linearizable if it is from some start,
/// `Unknown` if not and the budget ran out on some start.
pub fn check_from<M: Model>(
    model: &M,
    starts: &[M::State],
    ops: &[OpOf<M>],
    mut budget: u64,
) -> (Verdict, u64) {
    let (mut total, mut undecided) = (0, false);
    for s in starts {
        let Found {
            verdict: v, steps, ..
        } = search(model, s.clone(), ops, budget, false);
        total += steps;
        budget = budget.saturating_sub(steps);
        match v {
            Verdict::Linearizable => return (v, total),
            Verdict::Unknown => undecided = true,
            Verdict::Illegal => {}
        }
    }
    let v = if undecided {
        Verdict::Unknown
    } else {
        Verdict::Illegal
    };
    (v, total)
}

/// What [`search`] found.
struct Found<S> {
    verdict: Verdict,
    steps: u64,
    /// The end states: the one found when deciding, all of them when enumerating.
    ends: Vec<S>,
    /// The latest completion time of a definite operation the search was ever stuck at
    /// (met its return unplaced): where a failing history stops being explainable.
    stuck_at: Option<u64>,
}

/// The Wing–Gong search (module doc) from `init`. With `all_ends` it does not stop at the
/// first linearization but explores every configuration and returns every state a
/// linearization can end in (`Illegal` if there is none).
///
/// Invariants: the linked list holds exactly the events of the operations not on the stack,
/// in time order; `state` is the model state after the stack's operations in stack order;
/// `linearized` is the set of operations on the stack; `seen` holds every configuration
/// pushed so far.
fn search<M: Model>(
    model: &M,
    init: M::State,
    ops: &[OpOf<M>],
    budget: u64,
    all_ends: bool,
) -> Found<M::State> {
    let found = |verdict, steps, ends, stuck_at| Found {
        verdict,
        steps,
        ends,
        stuck_at,
    };
    // Keep what constrains the search: no Fail, no Unknown read. Deciding, an Unknown write
    // gets its deadline (`Model::seen_until`), and one whose deadline is before its
    // invocation is left out.
    let observed = if all_ends {
        Vec::new()
    } else {
        observed::<M>(ops)
    };
    let mut kept: Vec<(&OpOf<M>, u64)> = Vec::new();
    for o in ops {
        let ret = match o.outcome {
            Outcome::Ok(_) => {
                let c = o
                    .complete
                    .unwrap_or_else(|| panic!("an Ok op has a completion time: {o:?}"));
                assert!(c >= o.invoke, "op completes before its invocation: {o:?}");
                c
            }
            Outcome::Fail => continue,
            Outcome::Unknown if model.is_read(&o.input) => continue,
            Outcome::Unknown if all_ends => u64::MAX,
            Outcome::Unknown => match model.seen_until(&o.input, &observed) {
                Some(d) if d < o.invoke => continue,
                Some(d) => d,
                None => u64::MAX,
            },
        };
        kept.push((o, ret));
    }
    let ops: Vec<&OpOf<M>> = kept.iter().map(|(o, _)| *o).collect();
    let n = ops.len();
    if n == 0 {
        return found(Verdict::Linearizable, 0, vec![init], None);
    }
    // Events: (time, 0 = call / 1 = return, op). An Unknown op's return is at its deadline,
    // or at +∞ without one.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    let mut definite = vec![false; n];
    let mut endless = vec![false; n];
    let mut ret_time = vec![0; n];
    for (i, &(o, ret)) in kept.iter().enumerate() {
        definite[i] = matches!(o.outcome, Outcome::Ok(_));
        ret_time[i] = ret;
        endless[i] = !definite[i] && ret == u64::MAX;
        events.push((o.invoke, 0, i));
        events.push((ret, 1, i));
    }
    events.sort_unstable();
    // Nodes 0..2n are the events in order, node 2n is the head sentinel.
    let head = 2 * n;
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut call_node = vec![0; n];
    let mut ret_node = vec![0; n];
    let mut is_call = vec![false; 2 * n];
    let mut op_of = vec![0; 2 * n];
    let mut last = head;
    for (node, &(_, kind, op)) in events.iter().enumerate() {
        next[last] = node;
        prev[node] = last;
        last = node;
        is_call[node] = kind == 0;
        op_of[node] = op;
        if kind == 0 {
            call_node[op] = node;
        } else {
            ret_node[op] = node;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        next[prev[x]] = next[x];
        if next[x] != NIL {
            prev[next[x]] = prev[x];
        }
    };
    // Relinking in the reverse order of unlinking restores the list exactly.
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        next[prev[x]] = x;
        if next[x] != NIL {
            prev[next[x]] = x;
        }
    };

    let mut state = init;
    let mut linearized = Bits::new(n);
    let mut seen: HashSet<(Bits, M::State)> = HashSet::new();
    let mut ends: Vec<M::State> = Vec::new();
    // (operation, state before it, whether it was dropped rather than applied)
    let mut stack: Vec<(usize, M::State, bool)> = Vec::new();
    let mut entry = next[head];
    let mut steps = 0u64;
    let mut stuck_at: Option<u64> = None;
    loop {
        // Done: nothing left, or the first return left is an endless Unknown one (every
        // other return sorts before it, so every definite operation is placed).
        let done = entry == NIL || (!is_call[entry] && endless[op_of[entry]]);
        if done && !all_ends {
            return found(Verdict::Linearizable, steps, vec![state], stuck_at);
        }
        steps += 1;
        if steps > budget {
            return found(Verdict::Unknown, steps, ends, stuck_at);
        }
        if done {
            if !ends.contains(&state) {
                ends.push(state.clone());
            }
        } else if is_call[entry] {
            let op = op_of[entry];
            // Symmetry: of the Unknown ops with the same input that could go now (their calls
            // come before the first return), only the one with the earliest deadline (then
            // the lowest index) is tried. Any linearization applying another one now can
            // apply this one now instead, and the other one where this one was (or never).
            if !definite[op] {
                let mut x = next[head];
                let mut twin = false;
                while x != NIL && is_call[x] && !twin {
                    let b = op_of[x];
                    twin = b != op
                        && !definite[b]
                        && (ret_time[b], b) < (ret_time[op], op)
                        && ops[b].input == ops[op].input;
                    x = next[x];
                }
                if twin {
                    entry = next[entry];
                    continue;
                }
            }
            let (after, out) = model.apply(&state, &ops[op].input);
            let fits = match &ops[op].outcome {
                Outcome::Ok(o) => *o == out,
                _ => true,
            };
            if fits {
                linearized.set(op);
                if seen.insert((linearized.clone(), after.clone())) {
                    stack.push((op, std::mem::replace(&mut state, after), false));
                    unlink(&mut next, &mut prev, call_node[op]);
                    unlink(&mut next, &mut prev, ret_node[op]);
                    entry = next[head];
                    continue;
                }
                linearized.clear(op);
            }
            entry = next[entry];
            continue;
        } else if !definite[op_of[entry]] {
            // The deadline of an Unknown op not applied: from here on it never is. Its call
            // came earlier in the list, so applying it was tried from this configuration.
            let op = op_of[entry];
            linearized.set(op);
            if seen.insert((linearized.clone(), state.clone())) {
                stack.push((op, state.clone(), true));
                unlink(&mut next, &mut prev, call_node[op]);
                unlink(&mut next, &mut prev, ret_node[op]);
                entry = next[head];
                continue;
            }
            linearized.clear(op);
        } else {
            stuck_at = stuck_at.max(ops[op_of[entry]].complete);
        }
        // A definite return not yet placed, a configuration already explored, or (collecting
        // ends) a finished linearization: undo the last choice and try the calls after it.
        // Undoing a drop leaves no alternative at its deadline: undo the one before it too.
        loop {
            let Some((undo, before, dropped)) = stack.pop() else {
                let v = if ends.is_empty() {
                    Verdict::Illegal
                } else {
                    Verdict::Linearizable
                };
                return found(v, steps, ends, stuck_at);
            };
            state = before;
            linearized.clear(undo);
            relink(&mut next, &mut prev, ret_node[undo]);
            relink(&mut next, &mut prev, call_node[undo]);
            if !dropped {
                entry = next[call_node[undo]];
                break;
            }
        }
    }
}

/// The sound cut of `ops` at `t` (see the module doc): operations invoked after `t` dropped,
/// those still running at `t` made `Unknown` (reads among them dropped).
fn cut_at<M: Model>(model: &M, ops: &[OpOf<M>], t: u64) -> Vec<OpOf<M>> {
    ops.iter()
        .filter(|o| o.invoke <= t)
        .filter_map(|o| {
            let running = match o.outcome {
                Outcome::Ok(_) => o.complete.is_some_and(|c| c > t),
                _ => false,
            };
            if !running {
                Some(o.clone())
            } else if model.is_read(&o.input) {
                None
            } else {
                let mut o = o.clone();
                o.outcome = Outcome::Unknown;
                Some(o)
            }
        })
        .collect()
}

/// The operations of `ops` that remain after splitting at `q` (see the module doc): those
/// invoked at or after `q` as they are; of the earlier ones, those completed before `q` are
/// dropped, reads are dropped, and the rest become `Unknown`.
fn after<M: Model>(model: &M, ops: &[OpOf<M>], q: u64) -> Vec<OpOf<M>> {
    ops.iter()
        .filter_map(|o| {
            if o.invoke >= q {
                return Some(o.clone());
            }
            let done = matches!(o.outcome, Outcome::Ok(_)) && o.complete.is_some_and(|c| c < q);
            if done || model.is_read(&o.input) {
                return None;
            }
            let mut o = o.clone();
            o.outcome = Outcome::Unknown;
            Some(o)
        })
        .collect()
}

/// Every `Ok` answer in `ops` with its completion time.
fn observed<M: Model>(ops: &[OpOf<M>]) -> Vec<(&M::Output, u64)> {
    ops.iter()
        .filter_map(|o| match (&o.outcome, o.complete) {
            (Outcome::Ok(out), Some(c)) => Some((out, c)),
            _ => None,
        })
        .collect()
}

/// `ops` without `Unknown` reads and without the `Unknown` writes whose deadline
/// ([`Model::seen_until`]) is before their invocation: no answer in `ops` could show them.
/// Equivalence-preserving: a linearization of `ops` without them is one of `ops` (they may
/// be left out), and one with them stays one when they are taken out, one after the other
/// (taking one out changes no answer).
fn prune<M: Model>(model: &M, ops: Vec<OpOf<M>>) -> Vec<OpOf<M>> {
    let observed = observed::<M>(&ops);
    let keep: Vec<bool> = ops
        .iter()
        .map(|o| {
            o.outcome != Outcome::Unknown
                || !(model.is_read(&o.input)
                    || model
                        .seen_until(&o.input, &observed)
                        .is_some_and(|d| d < o.invoke))
        })
        .collect();
    ops.into_iter()
        .zip(keep)
        .filter_map(|(o, k)| k.then_some(o))
        .collect()
}

/// Most start states a split may leave for the witness to print.
const MAX_STARTS: usize = 8;

/// A small non-linearizable sub-history of one failing key.
#[derive(Clone, Debug)]
pub struct Witness<I, O> {
    /// The operations, by invocation time.
    pub ops: Vec<Op<I, O>>,
    /// The cut time, if the witness is a cut before the key's last completion.
    pub cut_at: Option<u64>,
    /// The split time and the states (`Debug`-printed) the operations before it can leave
    /// the key in, if the witness starts from a split: `ops` fail from every one of them.
    pub split: Option<(u64, Vec<String>)>,
    /// Reads dropped at the end.
    pub dropped_reads: usize,
    /// Not part of the witness, only to read it by: the last few writes (any outcome)
    /// invoked before the split, which led to its start states.
    pub context: Vec<Op<I, O>>,
}

/// How many writes before a split [`Witness::context`] shows.
const CONTEXT: usize = 5;

/// Shrinks a failing key's history to a [`Witness`] within `budget` steps: the earliest
/// failing cut, then the latest failing split, then reads dropped one by one. Each step keeps
/// only candidates that were checked to fail, so the witness fails whatever the budget.
fn shrink<M: Model>(
    model: &M,
    ops: &[OpOf<M>],
    stuck_at: Option<u64>,
    mut budget: u64,
) -> Witness<M::Input, M::Output> {
    let mut times: Vec<u64> = ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
        .filter_map(|o| o.complete)
        .collect();
    times.sort_unstable();
    times.dedup();
    // The earliest failing cut: cutting at the last completion keeps every definite op as it
    // is (the whole history, known to fail), so `hi` always fails. Every probe that fails
    // is an exhaustive search, so the cut where the search was stuck (`stuck_at`) is tried
    // first and, if it fails, taken as it is.
    let mut cur: Vec<_> = ops.to_vec();
    let mut cut = None;
    if let Some(&last) = times.last() {
        let (mut lo, mut hi) = (0usize, times.len() - 1);
        let hint = stuck_at.map(|t| times.partition_point(|&c| c < t));
        if let Some(i) = hint.filter(|&i| i < hi) {
            let (v, steps) = check_ops(model, &cut_at(model, ops, times[i]), budget);
            budget = budget.saturating_sub(steps);
            if v == Verdict::Illegal {
                (lo, hi) = (i, i);
            } else {
                lo = i + 1;
            }
        }
        while lo < hi && budget > 0 {
            let mid = (lo + hi) / 2;
            let (v, steps) = check_ops(model, &cut_at(model, ops, times[mid]), budget);
            budget = budget.saturating_sub(steps);
            if v == Verdict::Illegal {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if times[hi] < last {
            cut = Some(times[hi]);
            cur = cut_at(model, ops, times[hi]);
        }
    }
    // The latest failing split at an invocation time: index 0 (nothing before it, the one
    // start state is the initial state) always fails. Unknown writes nobody saw are pruned
    // first: the enumeration of end states keeps every Unknown op, and these would only
    // multiply the states.
    let mut cur = prune(model, cur);
    let mut invokes: Vec<u64> = cur.iter().map(|o| o.invoke).collect();
    invokes.sort_unstable();
    invokes.dedup();
    let mut starts = vec![model.init()];
    let mut split = None;
    let (mut lo, mut hi) = (0usize, invokes.len().saturating_sub(1));
    while lo < hi && budget > 0 {
        let mid = (lo + hi).div_ceil(2);
        let q = invokes[mid];
        let Found {
            verdict: v,
            steps,
            ends,
            ..
        } = search(
            model,
            model.init(),
            &cut_at(model, &cur, q - 1),
            budget,
            true,
        );
        budget = budget.saturating_sub(steps);
        let fails = v == Verdict::Linearizable && ends.len() <= MAX_STARTS && {
            let rest = prune(model, after(model, &cur, q));
            let (v, steps) = check_from(model, &ends, &rest, budget);
            budget = budget.saturating_sub(steps);
            v == Verdict::Illegal
        };
        if fails {
            lo = mid;
            starts = ends;
            split = Some(q);
        } else {
            hi = mid - 1;
        }
    }
    if let Some(q) = split {
        cur = prune(model, after(model, &cur, q));
    }
    // Then drop reads one by one, latest first, while it still fails.
    let mut dropped = 0;
    let mut i = cur.len();
    while i > 0 && budget > 0 {
        i -= 1;
        if !model.is_read(&cur[i].input) {
            continue;
        }
        let mut without = cur.clone();
        without.remove(i);
        let (v, steps) = check_from(model, &starts, &without, budget);
        budget = budget.saturating_sub(steps);
        if v == Verdict::Illegal {
            cur = without;
            dropped += 1;
        }
    }
    let mut cur = prune(model, cur);
    cur.sort_by_key(|o| o.invoke);
    let context = match split {
        None => Vec::new(),
        Some(q) => {
            let mut before: Vec<_> = ops
                .iter()
                .filter(|o| o.invoke < q && !model.is_read(&o.input))
                .cloned()
                .collect();
            before.sort_by_key(|o| o.invoke);
            before.split_off(before.len().saturating_sub(CONTEXT))
        }
    };
    Witness {
        ops: cur,
        context,
        cut_at: cut,
        split: split.map(|q| (q, starts.iter().map(|s| format!("{s:?}")).collect())),
        dropped_reads: dropped,
    }
}

/// The verdict on one key.
#[derive(Clone, Debug)]
pub struct KeyReport<I, O> {
    /// The key.
    pub key: String,
    /// How many operations it had (all outcomes).
    pub ops: usize,
    /// Its verdict.
    pub verdict: Verdict,
    /// Search steps spent.
    pub steps: u64,
    /// For an `Illegal` key: the shrunk failing sub-history.
    pub witness: Option<Witness<I, O>>,
}

/// The verdict on a whole history, key by key.
#[derive(Clone, Debug)]
pub struct Report<I, O> {
    /// One entry per key, in key order.
    pub keys: Vec<KeyReport<I, O>>,
}

impl<I: Debug, O: Debug> Report<I, O> {
    /// `Illegal` if any key is, else `Unknown` if any key is, else `Linearizable`.
    pub fn verdict(&self) -> Verdict {
        let any = |v| self.keys.iter().any(|k| k.verdict == v);
        if any(Verdict::Illegal) {
            Verdict::Illegal
        } else if any(Verdict::Unknown) {
            Verdict::Unknown
        } else {
            Verdict::Linearizable
        }
    }

    /// The keys found not linearizable.
    pub fn illegal_keys(&self) -> Vec<&str> {
        self.keys
            .iter()
            .filter(|k| k.verdict == Verdict::Illegal)
            .map(|k| k.key.as_str())
            .collect()
    }

    /// Panics, printing the report, unless every key is linearizable (an exhausted budget
    /// fails too).
    pub fn assert_linearizable(&self) {
        if self.verdict() != Verdict::Linearizable {
            panic!("history is not known to be linearizable\n{self}");
        }
    }

    /// Panics, printing the report, if any key is not linearizable; a key whose budget ran
    /// out is only reported on stderr.
    pub fn assert_no_violation(&self) {
        match self.verdict() {
            Verdict::Illegal => panic!("history is not linearizable\n{self}"),
            Verdict::Unknown => eprintln!("linearizability undecided (budget)\n{self}"),
            Verdict::Linearizable => {}
        }
    }
}

/// Milliseconds with microseconds, `+12.345ms`.
fn ms(t: u64) -> String {
    format!("+{}.{:03}ms", t / 1_000_000, (t / 1_000) % 1_000)
}

/// Prints a witness: one line per operation, by invocation, with an ASCII timeline
/// (`[` invoke, `]` completion, `>` an Unknown op that may apply until the end).
pub fn format_witness<I: Debug, O: Debug>(key: &str, total: usize, w: &Witness<I, O>) -> String {
    const WIDTH: u64 = 48;
    let mut s = String::new();
    let _ = write!(
        s,
        "key {key:?}: not linearizable; {} of its {total} ops cannot be ordered",
        w.ops.len()
    );
    if let Some(t) = w.cut_at {
        let _ = write!(
            s,
            " (history cut at {}: later ops dropped, ops running then shown as unknown)",
            ms(t)
        );
    }
    if w.dropped_reads > 0 {
        let _ = write!(s, " ({} reads dropped)", w.dropped_reads);
    }
    s.push('\n');
    if let Some((q, states)) = &w.split {
        if !w.context.is_empty() {
            let _ = writeln!(
                s,
                "  context, not part of the witness: the last writes invoked before {}",
                ms(*q)
            );
            for o in &w.context {
                let _ = writeln!(s, "    {}", op_text(o));
            }
        }
        let _ = writeln!(
            s,
            "  the ops completed before {} can only leave the key in one of: {}; \
             from each, these cannot be ordered (earlier ops still running are unknown)",
            ms(*q),
            states.join(", ")
        );
    }
    let lo = w.ops.iter().map(|o| o.invoke).min().unwrap_or(0);
    let hi = w
        .ops
        .iter()
        .flat_map(|o| [Some(o.invoke), o.complete])
        .flatten()
        .max()
        .unwrap_or(lo)
        .max(lo + 1);
    let col = |t: u64| ((t.saturating_sub(lo)) * (WIDTH - 1) / (hi - lo)) as usize;
    for o in &w.ops {
        let (c, end) = match (&o.outcome, o.complete) {
            (Outcome::Ok(_), Some(c)) => (col(c), ']'),
            _ => (WIDTH as usize - 1, '>'),
        };
        let a = col(o.invoke);
        let mut bar: Vec<char> = vec![' '; WIDTH as usize];
        for ch in bar.iter_mut().take(c + 1).skip(a) {
            *ch = '-';
        }
        bar[a] = '[';
        if c > a {
            bar[c] = end;
        } else if end == '>' {
            bar[a] = '>';
        }
        let bar: String = bar.into_iter().collect();
        let _ = writeln!(s, "  |{bar}| {}", op_text(o));
    }
    s
}

/// One operation on one line: client, interval, input, outcome.
fn op_text<I: Debug, O: Debug>(o: &Op<I, O>) -> String {
    let done = o.complete.map(ms).unwrap_or_else(|| "pending".into());
    let outcome = match &o.outcome {
        Outcome::Ok(v) => format!("ok {v:?}"),
        Outcome::Fail => "fail".into(),
        Outcome::Unknown => "unknown (may apply any time after invoke)".into(),
    };
    format!(
        "c{:<3} {:>12} .. {:<12} {:?} -> {outcome}",
        o.client,
        ms(o.invoke),
        done,
        o.input
    )
}

impl<I: Debug, O: Debug> fmt::Display for Report<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |v| self.keys.iter().filter(|k| k.verdict == v).count();
        writeln!(
            f,
            "linearizability: {} keys, {} linearizable, {} illegal, {} undecided (budget)",
            self.keys.len(),
            count(Verdict::Linearizable),
            count(Verdict::Illegal),
            count(Verdict::Unknown)
        )?;
        for k in &self.keys {
            match (&k.verdict, &k.witness) {
                (Verdict::Illegal, Some(w)) => f.write_str(&format_witness(&k.key, k.ops, w))?,
                (Verdict::Unknown, _) => writeln!(
                    f,
                    "key {:?}: undecided after {} steps ({} ops)",
                    k.key, k.steps, k.ops
                )?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Checks a whole history: partitioned by key, each key on its own (P-compositionality),
/// each failing key shrunk to a witness.
pub fn check<M: Model>(model: &M, ops: &[OpOf<M>], limits: Limits) -> Report<M::Input, M::Output> {
    let mut by_key: BTreeMap<&str, Vec<OpOf<M>>> = BTreeMap::new();
    for o in ops {
        by_key.entry(o.key.as_str()).or_default().push(o.clone());
    }
    let keys = by_key
        .into_iter()
        .map(|(key, ops)| {
            let Found {
                verdict,
                steps,
                stuck_at,
                ..
            } = search(model, model.init(), &ops, limits.steps_per_key, false);
            let witness = (verdict == Verdict::Illegal)
                .then(|| shrink(model, &ops, stuck_at, limits.shrink_steps));
            KeyReport {
                key: key.to_string(),
                ops: ops.len(),
                verdict,
                steps,
                witness,
            }
        })
        .collect();
    Report { keys }
}

/// A history recorder shared by client threads. Times are monotonic ([`Instant`]) and
/// relative to [`History::new`]; the invocation time is taken before the request goes out
/// and the completion time after the answer is in, so the interval covers the real effect.
pub struct History<I, O> {
    start: Instant,
    ops: Mutex<Vec<Op<I, O>>>,
}

/// An invoked operation not yet completed. Dropping it without [`History::complete`] leaves
/// the operation `Unknown` (e.g. when the client thread panics mid-call).
#[must_use = "complete it, or the operation stays Unknown"]
pub struct Pending(usize);

impl<I: Clone + Debug, O: Clone + Debug> Default for History<I, O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I: Clone + Debug, O: Clone + Debug> History<I, O> {
    /// An empty history; its clock starts now.
    pub fn new() -> Self {
        History {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Records the invocation of `input` on `key` by `client`, now. Until completed it is
    /// `Unknown`.
    pub fn invoke(&self, client: usize, key: impl Into<String>, input: I) -> Pending {
        let invoke = self.now();
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.push(Op {
            client,
            key: key.into(),
            input,
            outcome: Outcome::Unknown,
            invoke,
            complete: None,
        });
        Pending(ops.len() - 1)
    }

    /// Records the completion of `p`, now, with `outcome`.
    pub fn complete(&self, p: Pending, outcome: Outcome<O>) {
        let complete = self.now();
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let op = &mut ops[p.0];
        op.outcome = outcome;
        op.complete = Some(complete);
    }

    /// Invokes, runs `call`, completes with what it returns, and returns that.
    pub fn record(
        &self,
        client: usize,
        key: impl Into<String>,
        input: I,
        call: impl FnOnce() -> Outcome<O>,
    ) -> Outcome<O> {
        let p = self.invoke(client, key, input);
        let outcome = call();
        self.complete(p, outcome.clone());
        outcome
    }

    /// A copy of the operations recorded so far, in invocation order of recording.
    pub fn ops(&self) -> Vec<Op<I, O>> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many operations were recorded.
    pub fn len(&self) -> usize {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`check`] on the operations recorded so far.
    pub fn check<M: Model<Input = I, Output = O>>(
        &self,
        model: &M,
        limits: Limits,
    ) -> Report<I, O> {
        check(model, &self.ops(), limits)
    }
}

/// A config item (one `dataId`+`group`+`tenant` key) as a register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOp {
    /// `POST /nacos/v1/cs/configs` with this content.
    Publish(String),
    /// `GET /nacos/v1/cs/configs`.
    Get,
    /// `DELETE /nacos/v1/cs/configs`.
    Delete,
}

/// What a [`ConfigOp`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigRet {
    /// A publish or delete succeeded.
    Done,
    /// A get found this content.
    Found(String),
    /// A get found nothing (404).
    NotFound,
}

/// The register model of a config item: absent at first, `Publish` sets, `Delete` clears,
/// `Get` reads.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConfigRegister;

impl Model for ConfigRegister {
    type Input = ConfigOp;
    type Output = ConfigRet;
    type State = Option<String>;

    fn init(&self) -> Option<String> {
        None
    }

    fn apply(&self, state: &Option<String>, input: &ConfigOp) -> (Option<String>, ConfigRet) {
        match input {
            ConfigOp::Publish(c) => (Some(c.clone()), ConfigRet::Done),
            ConfigOp::Delete => (None, ConfigRet::Done),
            ConfigOp::Get => (
                state.clone(),
                state
                    .clone()
                    .map(ConfigRet::Found)
                    .unwrap_or(ConfigRet::NotFound),
            ),
        }
    }

    fn is_read(&self, input: &ConfigOp) -> bool {
        matches!(input, ConfigOp::Get)
    }

    /// The last completion of a get that returned the published content (for a delete: that
    /// found nothing), 0 if none: publish and delete both overwrite the whole register, so
    /// one applied after that is hidden by the next write before any get.
    fn seen_until(&self, input: &ConfigOp, observed: &[(&ConfigRet, u64)]) -> Option<u64> {
        let shows = |o: &ConfigRet| match input {
            ConfigOp::Publish(c) => matches!(o, ConfigRet::Found(f) if f == c),
            ConfigOp::Delete => *o == ConfigRet::NotFound,
            ConfigOp::Get => true,
        };
        let last = observed.iter().filter(|(o, _)| shows(o)).map(|(_, c)| *c);
        Some(last.max().unwrap_or(0))
    }
}

/// An operation on the persistent instances of one service (`ip:port` strings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceOp {
    /// `POST /nacos/v1/ns/instance?ephemeral=false`.
    Register(String),
    /// `DELETE /nacos/v1/ns/instance?ephemeral=false`.
    Deregister(String),
    /// `GET /nacos/v1/ns/instance/list`.
    Read,
}

/// What a [`ServiceOp`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceRet {
    /// A register or deregister succeeded (both are idempotent).
    Done,
    /// A read listed exactly these instances.
    Members(BTreeSet<String>),
}

impl ServiceRet {
    /// A read's answer from the listed `ip:port`s.
    pub fn members<S: Into<String>>(it: impl IntoIterator<Item = S>) -> ServiceRet {
        ServiceRet::Members(it.into_iter().map(Into::into).collect())
    }
}

/// The set model of a service's persistent instances: empty at first, `Register` adds,
/// `Deregister` removes, `Read` lists.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServiceSet;

impl Model for ServiceSet {
    type Input = ServiceOp;
    type Output = ServiceRet;
    type State = BTreeSet<String>;

    fn init(&self) -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn apply(&self, state: &BTreeSet<String>, input: &ServiceOp) -> (BTreeSet<String>, ServiceRet) {
        match input {
            ServiceOp::Register(m) => {
                let mut s = state.clone();
                s.insert(m.clone());
                (s, ServiceRet::Done)
            }
            ServiceOp::Deregister(m) => {
                let mut s = state.clone();
                s.remove(m);
                (s, ServiceRet::Done)
            }
            ServiceOp::Read => (state.clone(), ServiceRet::Members(state.clone())),
        }
    }

    fn is_read(&self, input: &ServiceOp) -> bool {
        matches!(input, ServiceOp::Read)
    }

    /// The last completion of a read that listed the instance (for a deregister: that did
    /// not list it), 0 if none: a read sees each instance's membership, and only a write of
    /// the same instance changes it, so one applied after that is undone before any read.
    fn seen_until(&self, input: &ServiceOp, observed: &[(&ServiceRet, u64)]) -> Option<u64> {
        let shows = |o: &ServiceRet| match (input, o) {
            (_, ServiceRet::Done) => false,
            (ServiceOp::Register(m), ServiceRet::Members(r)) => r.contains(m),
            (ServiceOp::Deregister(m), ServiceRet::Members(r)) => !r.contains(m),
            (ServiceOp::Read, _) => true,
        };
        let last = observed.iter().filter(|(o, _)| shows(o)).map(|(_, c)| *c);
        Some(last.max().unwrap_or(0))
    }
}
