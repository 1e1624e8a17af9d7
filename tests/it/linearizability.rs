//! A per-key linearizability checker for a register with delete and
//! compare-and-set, in the style of Wing & Gong with Lowe's memoisation (as
//! porcupine and Knossos do it). Pure code: no I/O, no clock except the
//! search budget.
//!
//! Values are unique per write, so a value names the write that produced it
//! and compare-and-set is modelled by the expected *value*.
//!
//! An operation whose outcome is unknown (timeout, connection lost after
//! sending, 503/504) has no return event: it may take effect at any point
//! after its invocation, or never. Reads with unknown outcomes carry no
//! information and are left out by the caller.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

/// What a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Linearizable read.
    Read,
    /// Unconditional put of a unique value.
    Write(u64),
    /// Delete (404 when absent).
    Delete,
    /// Put `new` if the current value is `expect`.
    Cas { expect: u64, new: u64 },
    /// Delete the key if it is present, else put the value: one key's view
    /// of a transaction whose compare tests that key's presence.
    Toggle(u64),
}

/// What the client saw, for operations with a known outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// A read's result (`None`: the key was absent).
    Value(Option<u64>),
    /// A put was applied.
    Written,
    /// A delete was applied: `true` if the key existed, `false` for a 404.
    Deleted(bool),
    /// A compare-and-set: `true` applied, `false` precondition failed (412).
    Swapped(bool),
    /// A toggle: `true` the key was present (deleted), `false` absent (put).
    Toggled(bool),
}

/// One operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Position in the caller's history, for reports.
    pub id: usize,
    pub client: usize,
    pub call: Call,
    /// `None`: unknown outcome.
    pub ret: Option<Ret>,
    /// Invocation and completion times (any monotonic unit, e.g. µs since start).
    pub invoke: u64,
    pub complete: u64,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = |v: Option<u64>| v.map_or("absent".to_string(), |v| v.to_string());
        let call = match self.call {
            Call::Read => "read".to_string(),
            Call::Write(x) => format!("put {x}"),
            Call::Delete => "delete".to_string(),
            Call::Cas { expect, new } => format!("cas {expect}->{new}"),
            Call::Toggle(x) => format!("toggle {x}"),
        };
        let ret = match self.ret {
            None => "unknown".to_string(),
            Some(Ret::Value(x)) => format!("= {}", v(x)),
            Some(Ret::Written) => "ok".to_string(),
            Some(Ret::Deleted(true)) => "ok".to_string(),
            Some(Ret::Deleted(false)) => "not found".to_string(),
            Some(Ret::Swapped(true)) => "ok".to_string(),
            Some(Ret::Swapped(false)) => "precondition failed".to_string(),
            Some(Ret::Toggled(true)) => "deleted (was present)".to_string(),
            Some(Ret::Toggled(false)) => "put (was absent)".to_string(),
        };
        let done = if self.ret.is_some() {
            self.complete.to_string()
        } else {
            "?".to_string()
        };
        write!(
            f,
            "#{} client {} [{}..{}] {call} {ret}",
            self.id, self.client, self.invoke, done
        )
    }
}

/// The register model: the next state if `op` may take effect in `state`.
fn step(state: Option<u64>, op: &Operation) -> Option<Option<u64>> {
    match (op.call, op.ret) {
        (Call::Read, Some(Ret::Value(seen))) => (seen == state).then_some(state),
        (Call::Read, _) => Some(state),
        (Call::Write(v), _) => Some(Some(v)),
        (Call::Delete, Some(Ret::Deleted(existed))) => (existed == state.is_some()).then_some(None),
        (Call::Delete, _) => Some(None),
        (Call::Cas { expect, new }, Some(Ret::Swapped(true))) => {
            (state == Some(expect)).then_some(Some(new))
        }
        (Call::Cas { expect, .. }, Some(Ret::Swapped(false))) => {
            (state != Some(expect)).then_some(state)
        }
        (Call::Cas { expect, new }, None) => Some(if state == Some(expect) {
            Some(new)
        } else {
            state
        }),
        (Call::Toggle(v), Some(Ret::Toggled(was_present))) => {
            (state.is_some() == was_present).then_some(toggled(state, v))
        }
        (Call::Toggle(v), None) => Some(toggled(state, v)),
        // A return that does not fit the call: never linearizable.
        _ => None,
    }
}

fn toggled(state: Option<u64>, v: u64) -> Option<u64> {
    match state {
        Some(_) => None,
        None => Some(v),
    }
}

/// The checker's answer for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order exists; the text explains where the search got stuck.
    NotLinearizable(String),
    /// The search ran out of its budget: counts as a failure.
    Timeout,
}

#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
    /// For a call: the index of its return event, if any.
    partner: Option<usize>,
}

/// A doubly linked list of call/return events with a sentinel at 0.
struct Events {
    ev: Vec<Event>,
}

impl Events {
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(ret) = self.ev[call].partner {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.ev[call].partner {
            self.relink(ret);
        }
        self.relink(call);
    }

    fn unlink(&mut self, i: usize) {
        let Event { prev, next, .. } = self.ev[i];
        self.ev[prev].next = next;
        if next != usize::MAX {
            self.ev[next].prev = prev;
        }
    }

    fn relink(&mut self, i: usize) {
        let Event { prev, next, .. } = self.ev[i];
        self.ev[prev].next = i;
        if next != usize::MAX {
            self.ev[next].prev = i;
        }
    }
}

/// The value that stands for every write of an unobserved value (see [`check`]).
const OPAQUE: u64 = u64::MAX;

/// How an operation counts in the memo.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Tracked by its own bit.
    Own(usize),
    /// An unknown put whose value nobody observed.
    OpaquePut,
    /// An unknown delete.
    OpaqueDelete,
    /// An unknown compare-and-set to an unobserved value, by its group
    /// (one group per expected value).
    OpaqueCas(usize),
    /// An unknown toggle whose value nobody observed.
    OpaqueToggle,
}

/// The memo key: which tracked operations are placed, the register, and how
/// many interchangeable unknowns are used.
type MemoKey = (Vec<u64>, Option<u64>, u32, u32, Vec<u32>, u32);

struct Search {
    bits: Vec<u64>,
    state: Option<u64>,
    opaque_puts: u32,
    opaque_deletes: u32,
    opaque_cas: Vec<u32>,
    opaque_toggles: u32,
    known_left: usize,
}

impl Search {
    fn apply(&mut self, class: Class, known: bool, next_state: Option<u64>) {
        match class {
            Class::Own(bit) => self.bits[bit / 64] |= 1 << (bit % 64),
            Class::OpaquePut => self.opaque_puts += 1,
            Class::OpaqueDelete => self.opaque_deletes += 1,
            Class::OpaqueCas(g) => self.opaque_cas[g] += 1,
            Class::OpaqueToggle => self.opaque_toggles += 1,
        }
        self.state = next_state;
        if known {
            self.known_left -= 1;
        }
    }

    fn undo(&mut self, class: Class, known: bool, prev_state: Option<u64>) {
        match class {
            Class::Own(bit) => self.bits[bit / 64] &= !(1 << (bit % 64)),
            Class::OpaquePut => self.opaque_puts -= 1,
            Class::OpaqueDelete => self.opaque_deletes -= 1,
            Class::OpaqueCas(g) => self.opaque_cas[g] -= 1,
            Class::OpaqueToggle => self.opaque_toggles -= 1,
        }
        self.state = prev_state;
        if known {
            self.known_left += 1;
        }
    }

    fn key_after(&self, class: Class, next_state: Option<u64>) -> MemoKey {
        let mut key = (
            self.bits.clone(),
            next_state,
            self.opaque_puts,
            self.opaque_deletes,
            self.opaque_cas.clone(),
            self.opaque_toggles,
        );
        match class {
            Class::Own(bit) => key.0[bit / 64] |= 1 << (bit % 64),
            Class::OpaquePut => key.2 += 1,
            Class::OpaqueDelete => key.3 += 1,
            Class::OpaqueCas(g) => key.4[g] += 1,
            Class::OpaqueToggle => key.5 += 1,
        }
        key
    }
}

/// Checks one key's history, starting from an absent key. `budget` bounds the search.
///
/// Unknown outcomes make the plain search exponential (every subset of them
/// may have taken effect). Exact reductions keep it small: an unknown put
/// whose value no read and no compare-and-set ever names acts only as "some
/// other value", so all such puts are interchangeable and the memo counts
/// them instead of naming them; unknown deletes are interchangeable likewise,
/// and so are unknown compare-and-sets to unobserved values from the same
/// expected value, and unknown toggles to unobserved values.
pub fn check(ops: &[Operation], budget: Duration) -> Verdict {
    let started = Instant::now();
    let mut observed = HashSet::new();
    for op in ops {
        if let Some(Ret::Value(Some(v))) = op.ret {
            observed.insert(v);
        }
        if let Call::Cas { expect, .. } = op.call {
            observed.insert(expect);
        }
    }
    let mut classes = Vec::with_capacity(ops.len());
    let mut model_ops = ops.to_vec();
    let mut own = 0;
    let mut cas_groups: std::collections::HashMap<u64, usize> = Default::default();
    for op in model_ops.iter_mut() {
        let class = match (op.call, op.ret) {
            (Call::Write(v), None) if !observed.contains(&v) => {
                op.call = Call::Write(OPAQUE);
                Class::OpaquePut
            }
            (Call::Delete, None) => Class::OpaqueDelete,
            (Call::Cas { expect, new }, None) if !observed.contains(&new) => {
                op.call = Call::Cas {
                    expect,
                    new: OPAQUE,
                };
                let next = cas_groups.len();
                Class::OpaqueCas(*cas_groups.entry(expect).or_insert(next))
            }
            (Call::Toggle(v), None) if !observed.contains(&v) => {
                op.call = Call::Toggle(OPAQUE);
                Class::OpaqueToggle
            }
            _ => {
                own += 1;
                Class::Own(own - 1)
            }
        };
        classes.push(class);
    }
    let ops_model = &model_ops;

    // Events in time order; at equal times calls come first, so touching
    // intervals count as concurrent (the lenient reading).
    let mut order: Vec<(u64, bool, usize)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        order.push((op.invoke, true, i));
        if op.ret.is_some() {
            order.push((op.complete.max(op.invoke), false, i));
        }
    }
    order.sort_by_key(|&(t, is_call, i)| (t, !is_call, i));
    let mut ev = vec![Event {
        op: usize::MAX,
        is_call: false,
        prev: usize::MAX,
        next: usize::MAX,
        partner: None,
    }];
    let mut call_of = vec![0usize; ops.len()];
    for (pos, &(_, is_call, op)) in order.iter().enumerate() {
        let idx = pos + 1;
        ev.push(Event {
            op,
            is_call,
            prev: idx - 1,
            next: if pos + 1 < order.len() {
                idx + 1
            } else {
                usize::MAX
            },
            partner: None,
        });
        if is_call {
            call_of[op] = idx;
        } else {
            ev[call_of[op]].partner = Some(idx);
        }
    }
    ev[0].next = if order.is_empty() { usize::MAX } else { 1 };
    let mut list = Events { ev };

    let mut search = Search {
        bits: vec![0u64; own.div_ceil(64)],
        state: None,
        opaque_puts: 0,
        opaque_deletes: 0,
        opaque_cas: vec![0; cas_groups.len()],
        opaque_toggles: 0,
        known_left: ops.iter().filter(|o| o.ret.is_some()).count(),
    };
    let mut cache: HashSet<MemoKey> = HashSet::new();
    // Linearized calls, each with the register before it.
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut entry = list.ev[0].next;
    // The deepest point reached, for the report.
    let mut best: (usize, Vec<usize>, usize) = (0, Vec::new(), usize::MAX);
    let mut steps: u64 = 0;

    let backtrack =
        |list: &mut Events, stack: &mut Vec<(usize, Option<u64>)>, search: &mut Search| -> usize {
            let Some((call, prev_state)) = stack.pop() else {
                return usize::MAX;
            };
            let op = list.ev[call].op;
            list.unlift(call);
            search.undo(classes[op], ops[op].ret.is_some(), prev_state);
            list.ev[call].next
        };

    while search.known_left > 0 {
        steps += 1;
        if steps.is_multiple_of(1024) && started.elapsed() > budget {
            return Verdict::Timeout;
        }
        if entry == usize::MAX {
            // Only unknown calls are left after this point and none fits:
            // the same as meeting a return, back off.
            entry = backtrack(&mut list, &mut stack, &mut search);
            if entry == usize::MAX {
                return not_linearizable(ops, &best);
            }
            continue;
        }
        let e = list.ev[entry];
        if e.is_call {
            let class = classes[e.op];
            if let Some(next_state) = step(search.state, &ops_model[e.op]) {
                if cache.insert(search.key_after(class, next_state)) {
                    stack.push((entry, search.state));
                    search.apply(class, ops[e.op].ret.is_some(), next_state);
                    list.lift(entry);
                    if stack.len() > best.0 {
                        best = (
                            stack.len(),
                            stack.iter().map(|(c, _)| list.ev[*c].op).collect(),
                            usize::MAX,
                        );
                    }
                    entry = list.ev[0].next;
                    continue;
                }
            }
            entry = e.next;
        } else {
            if stack.len() == best.0 {
                best.2 = e.op;
            }
            entry = backtrack(&mut list, &mut stack, &mut search);
            if entry == usize::MAX {
                return not_linearizable(ops, &best);
            }
        }
    }
    Verdict::Linearizable
}

fn not_linearizable(ops: &[Operation], best: &(usize, Vec<usize>, usize)) -> Verdict {
    let (_, order, stuck) = best;
    let mut text = String::new();
    let placed: HashSet<usize> = order.iter().copied().collect();
    let tail = order.len().saturating_sub(8);
    text.push_str(&format!(
        "the longest linearizable prefix places {} of {} operations; its last steps:\n",
        order.len(),
        ops.len()
    ));
    let mut state = None;
    for (n, &i) in order.iter().enumerate() {
        state = step(state, &ops[i]).unwrap_or(state);
        if n >= tail {
            let shown = state.map_or("absent".to_string(), |v| v.to_string());
            text.push_str(&format!("  {}   => {shown}\n", ops[i]));
        }
    }
    if *stuck != usize::MAX {
        let blocked = &ops[*stuck];
        text.push_str(&format!(
            "then {blocked} must be placed (it returned), but it fits nowhere; \
             operations open at that point:\n"
        ));
        for (i, op) in ops.iter().enumerate() {
            let overlaps = op.invoke <= blocked.complete
                && (op.ret.is_none() || op.complete >= blocked.invoke);
            if !placed.contains(&i) && i != *stuck && overlaps {
                text.push_str(&format!("  {op}\n"));
            }
        }
    }
    Verdict::NotLinearizable(text)
}

/// Checks stale reads: each must return a value the key held at some point
/// no later than the read's completion, i.e. absent, or the value of a write
/// (put or compare-and-set) invoked before the read completed and not known
/// to have failed. Returns one line per violation.
pub fn check_stale_reads(writes: &[Operation], reads: &[(Operation, Option<u64>)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (read, seen) in reads {
        let Some(value) = seen else { continue };
        let source = writes.iter().find(|w| match w.call {
            Call::Write(v) => v == *value,
            Call::Cas { new, .. } => new == *value && w.ret != Some(Ret::Swapped(false)),
            Call::Toggle(v) => v == *value && w.ret != Some(Ret::Toggled(true)),
            _ => false,
        });
        match source {
            None => problems.push(format!(
                "stale read {read} returned {value}, which no write produced"
            )),
            Some(w) if w.invoke > read.complete => problems.push(format!(
                "stale read {read} returned {value} before its write {w} was invoked"
            )),
            Some(_) => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_secs(10);

    fn op(client: usize, call: Call, ret: Option<Ret>, invoke: u64, complete: u64) -> Operation {
        Operation {
            id: 0,
            client,
            call,
            ret,
            invoke,
            complete,
        }
    }

    fn numbered(mut ops: Vec<Operation>) -> Vec<Operation> {
        for (i, o) in ops.iter_mut().enumerate() {
            o.id = i;
        }
        ops
    }

    fn read(c: usize, v: Option<u64>, a: u64, b: u64) -> Operation {
        op(c, Call::Read, Some(Ret::Value(v)), a, b)
    }

    fn put(c: usize, v: u64, a: u64, b: u64) -> Operation {
        op(c, Call::Write(v), Some(Ret::Written), a, b)
    }

    fn put_unknown(c: usize, v: u64, a: u64) -> Operation {
        op(c, Call::Write(v), None, a, u64::MAX)
    }

    fn cas(c: usize, expect: u64, new: u64, ok: bool, a: u64, b: u64) -> Operation {
        op(c, Call::Cas { expect, new }, Some(Ret::Swapped(ok)), a, b)
    }

    fn assert_lin(ops: Vec<Operation>) {
        let ops = numbered(ops);
        assert_eq!(check(&ops, BUDGET), Verdict::Linearizable, "{ops:#?}");
    }

    fn assert_not_lin(ops: Vec<Operation>) -> String {
        let ops = numbered(ops);
        match check(&ops, BUDGET) {
            Verdict::NotLinearizable(why) => why,
            other => panic!("expected a violation, got {other:?} for {ops:#?}"),
        }
    }

    #[test]
    fn empty_and_sequential_histories() {
        assert_lin(vec![]);
        assert_lin(vec![
            read(0, None, 0, 1),
            put(0, 1, 2, 3),
            read(0, Some(1), 4, 5),
            op(0, Call::Delete, Some(Ret::Deleted(true)), 6, 7),
            op(0, Call::Delete, Some(Ret::Deleted(false)), 8, 9),
            read(0, None, 10, 11),
        ]);
    }

    #[test]
    fn concurrent_reads_may_see_either_side_of_a_write() {
        // A write overlapping two reads: one sees the old value, then one the new.
        assert_lin(vec![
            put(0, 1, 0, 1),
            put(1, 2, 10, 20),
            read(2, Some(1), 11, 12),
            read(3, Some(2), 13, 14),
        ]);
        // Reads may not go back in time: new value, then old.
        let why = assert_not_lin(vec![
            put(0, 1, 0, 1),
            put(1, 2, 10, 20),
            read(2, Some(2), 11, 12),
            read(3, Some(1), 13, 14),
        ]);
        assert!(why.contains("fits nowhere"), "{why}");
    }

    #[test]
    fn stale_read_after_a_completed_write_is_caught() {
        // The classic: a write completes, a later read returns the old value.
        assert_not_lin(vec![
            put(0, 1, 0, 1),
            put(0, 2, 2, 3),
            read(1, Some(1), 4, 5),
        ]);
        // A read of a value never written.
        assert_not_lin(vec![put(0, 1, 0, 1), read(1, Some(7), 2, 3)]);
        // A read of absent after a completed write.
        assert_not_lin(vec![put(0, 1, 0, 1), read(1, None, 2, 3)]);
    }

    #[test]
    fn lost_update_is_caught() {
        // Two compare-and-sets from the same value both succeed: one update is lost.
        assert_not_lin(vec![
            put(0, 1, 0, 1),
            cas(1, 1, 2, true, 2, 10),
            cas(2, 1, 3, true, 3, 11),
        ]);
        // A write acknowledged, then a read that never sees it while the
        // previous value stays.
        assert_not_lin(vec![
            put(0, 1, 0, 1),
            put(1, 2, 2, 3),
            read(0, Some(1), 4, 5),
            read(1, Some(1), 6, 7),
        ]);
        // One succeeds and one fails: fine.
        assert_lin(vec![
            put(0, 1, 0, 1),
            cas(1, 1, 2, true, 2, 10),
            cas(2, 1, 3, false, 3, 11),
            read(0, Some(2), 12, 13),
        ]);
    }

    #[test]
    fn failed_cas_and_delete_carry_information() {
        // A 412 while the key surely held the expected value is a violation.
        assert_not_lin(vec![put(0, 1, 0, 1), cas(1, 1, 2, false, 2, 3)]);
        // A 404 delete while the key surely exists is a violation.
        assert_not_lin(vec![
            put(0, 1, 0, 1),
            op(1, Call::Delete, Some(Ret::Deleted(false)), 2, 3),
        ]);
    }

    #[test]
    fn unknown_writes_may_apply_late_or_never() {
        // Never: reads keep seeing the old value.
        assert_lin(vec![
            put(0, 1, 0, 1),
            put_unknown(1, 2, 2),
            read(0, Some(1), 10, 11),
            read(0, Some(1), 20, 21),
        ]);
        // Late: long after the client gave up.
        assert_lin(vec![
            put(0, 1, 0, 1),
            put_unknown(1, 2, 2),
            read(0, Some(1), 10, 11),
            read(0, Some(2), 20, 21),
        ]);
        // But once seen it stays: no flip back to the old value.
        assert_not_lin(vec![
            put(0, 1, 0, 1),
            put_unknown(1, 2, 2),
            read(0, Some(2), 10, 11),
            read(0, Some(1), 20, 21),
        ]);
        // And not before it was invoked.
        assert_not_lin(vec![
            put(0, 1, 0, 1),
            read(0, Some(2), 2, 3),
            put_unknown(1, 2, 4),
        ]);
        // An unknown compare-and-set applies only from its expected value.
        assert_not_lin(vec![
            put(0, 1, 0, 1),
            put(0, 5, 2, 3),
            op(1, Call::Cas { expect: 1, new: 9 }, None, 4, u64::MAX),
            read(0, Some(9), 10, 11),
        ]);
    }

    #[test]
    fn search_with_many_concurrent_unknowns_finishes() {
        // 40 unknown puts, then reads that each pick one of them: the search
        // must still answer quickly thanks to the memo.
        let mut ops = vec![put(0, 1000, 0, 1)];
        for v in 0..40 {
            ops.push(put_unknown(1 + v as usize, v, 2 + v));
        }
        for (n, v) in [3u64, 17, 39].iter().enumerate() {
            ops.push(read(0, Some(*v), 100 + 10 * n as u64, 105 + 10 * n as u64));
        }
        assert_lin(ops.clone());
        ops.push(read(0, Some(3), 200, 201)); // back to an earlier one: impossible
        assert_not_lin(ops);
    }

    #[test]
    fn many_unknown_compare_and_sets_finish() {
        let mut ops = vec![put(0, 1, 0, 1)];
        for v in 0..60 {
            ops.push(op(
                1 + v as usize,
                Call::Cas {
                    expect: 1 + v % 2,
                    new: 100 + v,
                },
                None,
                2 + v,
                u64::MAX,
            ));
        }
        ops.push(read(0, Some(1), 100, 101));
        ops.push(put(0, 2, 102, 103));
        ops.push(read(0, Some(2), 104, 105));
        assert_lin(ops.clone());
        ops.push(read(0, Some(1), 200, 201));
        assert_not_lin(ops);
    }

    fn toggle(c: usize, v: u64, was_present: Option<bool>, a: u64, b: u64) -> Operation {
        op(c, Call::Toggle(v), was_present.map(Ret::Toggled), a, b)
    }

    #[test]
    fn toggles_put_when_absent_and_delete_when_present() {
        assert_lin(vec![
            toggle(0, 5, Some(false), 0, 1),
            read(1, Some(5), 2, 3),
            toggle(0, 6, Some(true), 4, 5),
            read(1, None, 6, 7),
            toggle(1, 7, Some(false), 8, 9),
            read(0, Some(7), 10, 11),
        ]);
        // "Was present" while the key surely was absent, and the reverse.
        assert_not_lin(vec![toggle(0, 5, Some(true), 0, 1)]);
        assert_not_lin(vec![put(0, 1, 0, 1), toggle(1, 5, Some(false), 2, 3)]);
        // A toggle that deleted cannot have left its own value behind.
        assert_not_lin(vec![
            put(0, 1, 0, 1),
            toggle(1, 5, Some(true), 2, 3),
            read(0, Some(5), 4, 5),
        ]);
        // Two overlapping toggles from present: one deletes, the other puts.
        assert_lin(vec![
            put(0, 1, 0, 1),
            toggle(1, 5, Some(true), 2, 10),
            toggle(2, 6, Some(false), 3, 11),
            read(0, Some(6), 12, 13),
        ]);
        // Both cannot have found it present.
        assert_not_lin(vec![
            put(0, 1, 0, 1),
            toggle(1, 5, Some(true), 2, 10),
            toggle(2, 6, Some(true), 3, 11),
        ]);
    }

    #[test]
    fn unknown_toggles_apply_once_or_never() {
        // Never, or late.
        assert_lin(vec![
            put(0, 1, 0, 1),
            toggle(1, 5, None, 2, u64::MAX),
            read(0, Some(1), 10, 11),
            read(0, None, 20, 21),
        ]);
        // Its value appears only from absent.
        assert_not_lin(vec![
            put(0, 1, 0, 1),
            toggle(1, 5, None, 2, u64::MAX),
            read(0, Some(5), 10, 11),
        ]);
        // Many unobserved unknown toggles stay cheap, and they still cannot
        // bring back a value once it was deleted.
        let mut ops = vec![put(0, 1, 0, 1)];
        for v in 0..60 {
            ops.push(toggle(1 + v as usize, 100 + v, None, 2 + v, u64::MAX));
        }
        ops.push(read(0, None, 100, 101));
        ops.push(read(0, Some(1), 102, 103)); // deleted: it cannot come back
        let why = assert_not_lin(ops.clone());
        assert!(why.contains("fits nowhere"), "{why}");
        ops.pop();
        ops.push(put(0, 2, 104, 105));
        ops.push(read(0, Some(2), 106, 107));
        ops.push(read(0, None, 108, 109));
        assert_lin(ops);
    }

    #[test]
    fn a_timeout_is_reported_as_such() {
        // Many concurrent reads of wrong values with no memo hits is hard;
        // a zero budget makes any non-trivial search time out.
        let mut ops = Vec::new();
        for v in 0..5000u64 {
            ops.push(put(v as usize, v, 0, 1_000_000));
        }
        ops.push(read(0, Some(1_000_000), 2_000_000, 2_000_001));
        let ops = numbered(ops);
        assert_eq!(check(&ops, Duration::ZERO), Verdict::Timeout);
    }

    #[test]
    fn stale_reads_must_see_a_real_value() {
        let writes = numbered(vec![put(0, 1, 0, 1), put(0, 2, 10, 11)]);
        let ok = read(1, Some(1), 20, 21);
        let future = read(1, Some(2), 5, 6);
        let invented = read(1, Some(9), 5, 6);
        assert!(check_stale_reads(&writes, &[(ok, Some(1))]).is_empty());
        assert!(check_stale_reads(&writes, &[(read(1, None, 0, 1), None)]).is_empty());
        assert_eq!(check_stale_reads(&writes, &[(future, Some(2))]).len(), 1);
        assert_eq!(check_stale_reads(&writes, &[(invented, Some(9))]).len(), 1);
    }
}
