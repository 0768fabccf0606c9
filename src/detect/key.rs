//! Whose state an observation belongs to. Keys are text (`cluster\x1fvalue\x1f…`) that names
//! alerts, so their ids stay stable across runs; state is stored under a 128-bit hash of it, with
//! a seed drawn per process so that nobody can craft colliding usernames (16 bytes instead of a
//! heap string per key and rule).

use crate::event::EventView;
use crate::rules::field::Field;
use foldhash::HashMap;
use std::sync::Arc;

pub type StateKey = u128;

pub fn state_key(text: &str) -> StateKey {
    crate::keyed::hash128(text.as_bytes())
}

/// `cluster\x1fvalue\x1fvalue…`: the text state is keyed by, written into `out`.
pub(super) fn key_text(out: &mut String, cluster: &str, view: &EventView, fields: &[Field]) {
    out.clear();
    out.push_str(cluster);
    append_fields(out, view, fields);
}

/// `\x1fvalue…` for each of `fields`, appended to a key text.
pub(super) fn append_fields(out: &mut String, view: &EventView, fields: &[Field]) {
    for f in fields {
        out.push('\u{1f}');
        f.any(view, |v| {
            v.write_text(out);
            true
        });
    }
}

/// The cluster part of a key text.
pub(super) fn cluster_of(key: &str) -> &str {
    key.split('\u{1f}').next().unwrap_or("")
}

/// The key of observations whose state needs none (new_terms): one shared empty string.
pub(super) fn no_key() -> Arc<str> {
    thread_local!(static EMPTY: Arc<str> = Arc::from(""));
    EMPTY.with(Arc::clone)
}

/// `state_key(identity_key(cluster, who))`, without making the key.
pub(super) fn identity_hash(cluster: &str, who: &str) -> StateKey {
    with_identity_text(cluster, who, state_key)
}

/// `cluster\x1fwho`: whose state an observation belongs to.
pub(super) fn identity_key(cluster: &str, who: &str) -> Arc<str> {
    with_identity_text(cluster, who, |text| Arc::from(text))
}

/// Calls `f` with `cluster\x1fwho`, written into a reused buffer (no allocation of its own).
fn with_identity_text<R>(cluster: &str, who: &str, f: impl FnOnce(&str) -> R) -> R {
    thread_local!(static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
    KEY.with_borrow_mut(|key| {
        key.clear();
        key.push_str(cluster);
        key.push('\u{1f}');
        key.push_str(who);
        f(key)
    })
}

/// Drops the least recently seen tenth of the keys when over the cap; returns how many.
pub(super) fn evict<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    cap: usize,
    last_seen: impl Fn(&V) -> i64,
) -> u64 {
    if map.len() <= cap {
        return 0;
    }
    let mut times: Vec<i64> = map.values().map(&last_seen).collect();
    let drop = (cap / 10).max(map.len() - cap);
    let nth = drop.min(times.len() - 1);
    let (_, cut, _) = times.select_nth_unstable(nth);
    let cut = *cut;
    let before = map.len();
    map.retain(|_, v| last_seen(v) > cut);
    (before - map.len()) as u64
}
