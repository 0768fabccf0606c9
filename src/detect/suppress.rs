//! `suppress:` — at most one alert per rule, cluster and actor per period; the next alert that
//! gets through carries how many were held back.

use crate::alert::{Alert, Status};
use foldhash::{HashMap, HashSet};

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Suppressor {
    /// (rule, cluster, actor) → (quiet until, held back since the last one through); a list
    /// in a snapshot (JSON map keys are strings).
    #[serde(with = "pairs")]
    quiet: HashMap<(String, String, String), (i64, u64)>,
    /// Episodes whose opening alert was held back: their updates are held back too.
    held_episodes: HashSet<String>,
    pub suppressed: u64,
}

/// A map written as a list of (key, value) pairs.
mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::hash::Hash;

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &foldhash::HashMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<foldhash::HashMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Hash + Eq,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let pairs: Vec<(K, V)> = Vec::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

impl Suppressor {
    /// Whether `alert` goes out; updates its evidence with the count suppressed before it.
    /// An episode's updates go out when its opening did.
    pub fn admit(&mut self, alert: &mut Alert, period: Option<i64>) -> bool {
        if matches!(alert.status, Some(Status::Updated | Status::Closed)) {
            return !self.held_episodes.contains(&alert.id);
        }
        let Some(period) = period else { return true };
        let key = (
            alert.rule.id.clone(),
            alert.cluster.clone(),
            alert.actor.username.clone(),
        );
        let now = alert.time_micros;
        match self.quiet.get_mut(&key) {
            Some((until, held)) if now < *until => {
                *held += 1;
                self.suppressed += 1;
                if alert.status == Some(Status::Open) {
                    if self.held_episodes.len() >= super::DEFAULT_MAX_KEYS {
                        self.held_episodes.clear();
                    }
                    self.held_episodes.insert(alert.id.clone());
                }
                false
            }
            Some(entry) => {
                alert.evidence.suppressed = (entry.1 > 0).then_some(entry.1);
                *entry = (now + period, 0);
                true
            }
            None => {
                if self.quiet.len() >= super::DEFAULT_MAX_KEYS {
                    self.quiet.retain(|_, (until, _)| *until > now);
                }
                self.quiet.insert(key, (now + period, 0));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppression_holds_back_and_counts() {
        let mut sup = Suppressor::default();
        let alert = crate::alert::test_alert;
        let period = Some(100);
        let admitted: Vec<bool> = [0, 50, 99, 100, 150]
            .iter()
            .map(|t| sup.admit(&mut alert(*t), period))
            .collect();
        assert_eq!(admitted, [true, false, false, true, false]);
        let mut later = alert(300);
        assert!(sup.admit(&mut later, period));
        assert_eq!(later.evidence.suppressed, Some(1));
        assert_eq!(sup.suppressed, 3);
    }
}
