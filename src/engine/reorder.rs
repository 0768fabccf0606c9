//! Event-time order for the stateful detectors.
//!
//! Several API servers (webhook posts, followed files, Kafka partitions) deliver their events a
//! little out of order with each other; a replay merges files by event time. For the two to
//! give the same alerts, the stateful detectors must see events in event-time order, not in
//! arrival order. Observations therefore wait here until the watermark passes them, and leave
//! oldest first, arrivals breaking ties. The watermark is the newest *record* time seen (the
//! time of a record's first event, which is where a merge places it) minus the allowed
//! lateness: a record that carries hours of events at once (a whole EventList) does not push
//! it ahead of the other inputs, its later events simply wait for them. An item older than the
//! watermark on arrival is *late*: it leaves at once (its order can no longer be kept) and is
//! counted.

use std::collections::VecDeque;

pub struct Reorder<T> {
    lateness: i64,
    newest: i64,
    /// By time, oldest first; equal times in arrival order.
    held: VecDeque<(i64, T)>,
    /// Items that arrived behind the watermark.
    pub late: u64,
}

impl<T> Reorder<T> {
    /// `lateness` in microseconds of event time.
    pub fn new(lateness: i64) -> Self {
        Reorder {
            lateness: lateness.max(0),
            newest: i64::MIN,
            held: VecDeque::new(),
            late: 0,
        }
    }

    /// Times at or before the watermark are final: nothing older is waited for any more.
    pub fn watermark(&self) -> i64 {
        self.newest.saturating_sub(self.lateness)
    }

    /// Input has reached a record placed at `time`.
    pub fn advance(&mut self, time: i64) {
        self.newest = self.newest.max(time);
    }

    pub fn push(&mut self, time: i64, item: T) {
        if self.newest != i64::MIN && time < self.watermark() {
            self.late += 1;
        }
        // Nearly always in order: appended.
        let at = match self.held.back() {
            Some((last, _)) if *last > time => self.held.partition_point(|(t, _)| *t <= time),
            _ => self.held.len(),
        };
        self.held.insert(at, (time, item));
    }

    /// Places an item made by applying another (an alert for the incidents): never late.
    pub fn insert(&mut self, time: i64, item: T) {
        let at = self.held.partition_point(|(t, _)| *t <= time);
        self.held.insert(at, (time, item));
    }

    /// The oldest item, if the watermark has passed it.
    pub fn pop_due(&mut self) -> Option<T> {
        let due = self.held.front()?.0 <= self.watermark();
        due.then(|| self.held.pop_front().map(|(_, item)| item))
            .flatten()
    }

    /// The oldest item, due or not (the buffer is full, or input ended or paused).
    pub fn pop_oldest(&mut self) -> Option<T> {
        self.held.pop_front().map(|(_, item)| item)
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due<T>(r: &mut Reorder<T>) -> Vec<T> {
        std::iter::from_fn(|| r.pop_due()).collect()
    }

    /// One record per item, placed at the item's time.
    fn push<T>(r: &mut Reorder<T>, time: i64, item: T) {
        r.advance(time);
        r.push(time, item);
    }

    #[test]
    fn items_leave_in_event_time_once_the_watermark_passes_them() {
        let mut r = Reorder::new(10);
        push(&mut r, 100, "a");
        push(&mut r, 95, "b"); // out of order, within the lateness
        push(&mut r, 105, "c"); // watermark 95
        assert_eq!(due(&mut r), ["b"]);
        push(&mut r, 112, "d"); // watermark 102
        assert_eq!(due(&mut r), ["a"]);
        push(&mut r, 130, "e"); // watermark 120
        assert_eq!(due(&mut r), ["c", "d"]);
        assert_eq!(r.late, 0);
        assert_eq!(
            std::iter::from_fn(|| r.pop_oldest()).collect::<Vec<_>>(),
            ["e"]
        );
    }

    #[test]
    fn equal_times_keep_their_arrival_order() {
        let mut r = Reorder::new(0);
        for (t, s) in [(5, "a"), (5, "b"), (4, "c"), (5, "d")] {
            push(&mut r, t, s);
        }
        assert_eq!(due(&mut r), ["c", "a", "b", "d"]);
    }

    #[test]
    fn a_record_carrying_later_events_does_not_move_the_watermark_past_them() {
        let mut r = Reorder::new(10);
        // One record placed at 100 holds events up to 200 (a batched EventList).
        r.advance(100);
        for (t, s) in [(100, "list-100"), (150, "list-150"), (200, "list-200")] {
            r.push(t, s);
        }
        assert!(due(&mut r).is_empty(), "watermark 90");
        // The other inputs go on from 101: none is late, and they interleave by time.
        for (t, s) in [(120, "a-120"), (160, "a-160"), (215, "a-215")] {
            push(&mut r, t, s);
        }
        assert_eq!(r.late, 0);
        assert_eq!(
            due(&mut r),
            ["list-100", "a-120", "list-150", "a-160", "list-200"]
        );
    }

    #[test]
    fn an_item_behind_the_watermark_is_late_and_leaves_first() {
        let mut r = Reorder::new(10);
        push(&mut r, 100, "a");
        push(&mut r, 150, "b"); // watermark 140: "a" is due
        assert_eq!(due(&mut r), ["a"]);
        push(&mut r, 120, "late");
        assert_eq!(r.late, 1);
        assert_eq!(due(&mut r), ["late"]);
        push(&mut r, 141, "inside");
        assert_eq!(r.late, 1, "141 is after the watermark");
    }
}
