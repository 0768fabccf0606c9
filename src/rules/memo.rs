//! Remembered answers of costly matchers on fields whose values repeat all day.
//!
//! A stream has a few hundred distinct user agents, source-IP lists and usernames, yet a
//! substring automaton, a regex or a CIDR parse runs on each of millions of events. Per thread,
//! each such matcher keeps its answer per value text (the value itself is kept and compared, so
//! a hash collision can only cost a recomputation, never a wrong answer).

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, Ordering};

/// Values remembered per thread before the memory is dropped and refilled (a bound against
/// streams that do have many distinct values).
const CAPACITY: usize = 16_384;

/// Fields whose values repeat: a memo on them mostly hits.
pub const LOW_CARDINALITY: &[&str] = &[
    "userAgent",
    "sourceIPs",
    "user.username",
    "user.groups",
    "impersonatedUser.username",
];

/// A fresh identity for one memoised matcher.
pub fn next_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

struct Memory {
    hasher: foldhash::fast::FixedState,
    answers: foldhash::HashMap<u64, (u32, Box<str>, bool)>,
}

thread_local! {
    static MEMORY: RefCell<Memory> = RefCell::new(Memory {
        hasher: foldhash::fast::FixedState::with_seed(0x6d65_6d6f),
        answers: foldhash::HashMap::default(),
    });
}

/// `compute()` for matcher `id` on the value `text`, remembered.
pub fn answer(id: u32, text: &str, compute: impl FnOnce() -> bool) -> bool {
    let (hash, known) = MEMORY.with_borrow(|memory| {
        let hash = memory.hasher.hash_one((id, text));
        let known = memory
            .answers
            .get(&hash)
            .filter(|(seen_id, seen, _)| *seen_id == id && &**seen == text)
            .map(|(_, _, answer)| *answer);
        (hash, known)
    });
    if let Some(answer) = known {
        return answer;
    }
    let result = compute();
    MEMORY.with_borrow_mut(|memory| {
        if memory.answers.len() >= CAPACITY {
            memory.answers.clear();
        }
        memory.answers.insert(hash, (id, text.into(), result));
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn remembers_per_matcher_and_value() {
        let (a, b) = (next_id(), next_id());
        let calls = Cell::new(0);
        let run = |id, text: &str, result| {
            answer(id, text, || {
                calls.set(calls.get() + 1);
                result
            })
        };
        assert!(run(a, "kubectl/1.30", true));
        assert!(run(a, "kubectl/1.30", false), "remembered, not recomputed");
        assert!(
            !run(b, "kubectl/1.30", false),
            "another matcher, its own answer"
        );
        assert!(!run(a, "curl/8", false));
        assert_eq!(calls.get(), 3);
    }
}
