//! A claim's bookkeeping of queue limits, shared by the SQL stores' `claim_next`: what every
//! worker holds now, per queue and per concurrency key, and which candidates fit.
//!
//! The stores read the live leases once (under the queue's lock, or in the single writer), then
//! read candidates page by page: each page leaves out the queues and keys already full, so a
//! backlog of one key cannot hide the runs of another behind it.

use std::collections::HashMap;

use super::{ClaimRequest, QueueLimit};

/// The most pages one `claim_next` reads: each page either claims a run or fills a queue or a
/// key that the next page then leaves out, so a claim needs at most `max` plus the number of
/// keys it fills; this only bounds a store whose candidates change under it.
pub(super) const MAX_PAGES: usize = 64;

pub(super) struct Admission<'a> {
    limits: HashMap<&'a str, &'a QueueLimit>,
    in_queue: HashMap<String, u32>,
    per_key: HashMap<(String, String), u32>,
}

impl<'a> Admission<'a> {
    /// Starts from the live leases: `(queue, key, count)` rows over every run of the requested
    /// queues, whoever holds them.
    pub(super) fn new(
        request: &'a ClaimRequest,
        held: impl IntoIterator<Item = (String, Option<String>, u32)>,
    ) -> Self {
        let limits = request.queues.iter().map(|q| (q.queue.as_str(), q)).collect();
        let mut admission = Admission { limits, in_queue: HashMap::new(), per_key: HashMap::new() };
        for (queue, key, n) in held {
            *admission.in_queue.entry(queue.clone()).or_default() += n;
            if let Some(key) = key {
                *admission.per_key.entry((queue, key)).or_default() += n;
            }
        }
        admission
    }

    /// Whether a queue has a limit at all (its claimers must then be serialized and count).
    #[cfg(feature = "postgres")]
    pub(super) fn is_limited(limit: &QueueLimit) -> bool {
        limit.concurrency.is_some() || limit.per_key.is_some()
    }

    fn queue_full(&self, limit: &QueueLimit) -> bool {
        limit.concurrency.is_some_and(|n| self.in_queue.get(&limit.queue).copied().unwrap_or(0) >= n)
    }

    /// The requested queues that can take one more run.
    pub(super) fn open_queues(&self) -> Vec<String> {
        self.limits.values().filter(|l| !self.queue_full(l)).map(|l| l.queue.clone()).collect()
    }

    /// The `(queue, key)` pairs at their per-key limit, as two parallel lists.
    pub(super) fn full_keys(&self) -> (Vec<String>, Vec<String>) {
        self.per_key
            .iter()
            .filter(|((queue, _), n)| {
                self.limits.get(queue.as_str()).and_then(|l| l.per_key).is_some_and(|limit| **n >= limit)
            })
            .map(|((queue, key), _)| (queue.clone(), key.clone()))
            .unzip()
    }

    /// Counts a candidate in if its queue and key have room; says whether it was.
    pub(super) fn admit(&mut self, queue: &str, key: Option<&str>) -> bool {
        let Some(limit) = self.limits.get(queue).copied() else { return false };
        if self.queue_full(limit) {
            return false;
        }
        if let (Some(n), Some(key)) = (limit.per_key, key)
            && self.per_key.get(&(queue.to_string(), key.to_string())).copied().unwrap_or(0) >= n
        {
            return false;
        }
        *self.in_queue.entry(queue.to_string()).or_default() += 1;
        if let Some(key) = key {
            *self.per_key.entry((queue.to_string(), key.to_string())).or_default() += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn request(queues: Vec<QueueLimit>) -> ClaimRequest {
        ClaimRequest { owner: "w".into(), lease: Duration::ZERO, flows: vec!["f".into()], queues, max: 10 }
    }

    #[test]
    fn limits_count_what_is_held_and_what_is_admitted() {
        let request = request(vec![QueueLimit::new("a").concurrency(2).per_key(1), QueueLimit::new("b")]);
        let mut admission = Admission::new(&request, [("a".to_string(), Some("k".to_string()), 1)]);
        assert_eq!(admission.full_keys(), (vec!["a".to_string()], vec!["k".to_string()]));
        assert!(!admission.admit("a", Some("k")), "key k is at its limit");
        assert!(admission.admit("a", Some("j")));
        assert!(!admission.admit("a", None), "queue a is at its limit");
        assert_eq!(admission.open_queues(), ["b"]);
        assert!(admission.admit("b", Some("k")), "b has no limits");
        assert!(!admission.admit("c", None), "not a requested queue");
    }
}
