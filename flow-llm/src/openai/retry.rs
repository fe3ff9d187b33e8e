//! [`RetryPolicy`]: how [`OpenAiLlm`](crate::OpenAiLlm) retries rate limits, 5xx and connection
//! failures. It is the only retry layer; async-openai's own one is switched off so attempts do
//! not multiply.

use std::time::Duration;

use rand::Rng;

use crate::error::LlmError;

/// Exponential backoff with jitter that honours `Retry-After`.
///
/// Attempt `n` (from 0) waits `initial_backoff * 2^n`, capped at `max_backoff`, scaled by a random
/// factor in `[0.5, 1.0]` so that many clients hit by the same outage do not retry in lockstep.
/// When the endpoint sends `Retry-After` (or `retry-after-ms`), that delay is used as-is; if it
/// is longer than `max_retry_after`, the call fails at once with
/// [`LlmError::RetryAfterTooLong`], which names both durations, so the flow's own retry policy
/// can reschedule the step instead of holding a task asleep. A `Retry-After` that is not a
/// usable delay (negative, garbage) is ignored in favour of the backoff.
///
/// ```
/// use std::time::Duration;
/// use flow_llm::RetryPolicy;
///
/// let p = RetryPolicy::default().max_retries(5).initial_backoff(Duration::from_millis(50));
/// assert_eq!(p.max_retries, 5);
/// assert!(p.backoff(0) <= Duration::from_millis(50));
/// assert!(p.backoff(10) <= p.max_backoff);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff.
    pub initial_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// The longest `Retry-After` waited for in-process.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    ///
    /// ```
    /// assert_eq!(flow_llm::RetryPolicy::none().max_retries, 0);
    /// ```
    pub fn none() -> Self {
        RetryPolicy { max_retries: 0, ..Default::default() }
    }

    /// Sets the number of retries.
    ///
    /// ```
    /// assert_eq!(flow_llm::RetryPolicy::default().max_retries(1).max_retries, 1);
    /// ```
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Sets the first backoff.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = flow_llm::RetryPolicy::default().initial_backoff(Duration::from_millis(1));
    /// assert_eq!(p.initial_backoff, Duration::from_millis(1));
    /// ```
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// Sets the longest backoff.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = flow_llm::RetryPolicy::default().max_backoff(Duration::from_secs(1));
    /// assert_eq!(p.max_backoff, Duration::from_secs(1));
    /// ```
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Sets the longest `Retry-After` honoured in-process.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = flow_llm::RetryPolicy::default().max_retry_after(Duration::from_secs(5));
    /// assert_eq!(p.max_retry_after, Duration::from_secs(5));
    /// ```
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }

    /// The jittered backoff before retry `attempt` (from 0) when the endpoint gave no
    /// `Retry-After`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = flow_llm::RetryPolicy::default();
    /// assert!(p.backoff(1) >= Duration::from_millis(500));
    /// ```
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        let base = self.initial_backoff.saturating_mul(factor).min(self.max_backoff);
        let jitter = rand::rng().random_range(0.5..=1.0);
        // `mul_f64` panics when the product rounds above `Duration::MAX` (a `max_backoff` of
        // `Duration::MAX` does); the unjittered base is the right answer then.
        Duration::try_from_secs_f64(base.as_secs_f64() * jitter).unwrap_or(base)
    }

    /// What to do after attempt `attempt` (from 0) failed with `error`.
    pub(crate) fn next(&self, attempt: u32, error: &LlmError) -> Next {
        if attempt >= self.max_retries || !error.retryable_in_process() {
            return Next::GiveUp;
        }
        match error.retry_after() {
            Some(d) if d > self.max_retry_after => Next::WaitTooLong(d),
            Some(d) => Next::Retry(d),
            None => Next::Retry(self.backoff(attempt)),
        }
    }
}

/// The decision after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Return the error as it is.
    GiveUp,
    /// The endpoint asked to wait this long, more than `max_retry_after`.
    WaitTooLong(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16, retry_after: Option<Duration>) -> LlmError {
        LlmError::Api { status: s, kind: None, code: None, param: None, message: String::new(), retry_after }
    }

    #[test]
    fn honours_retry_after_and_gives_up() {
        let p = RetryPolicy::default();
        let secs = Duration::from_secs;
        assert_eq!(p.next(0, &status(429, Some(secs(2)))), Next::Retry(secs(2)));
        assert_eq!(p.next(0, &status(429, Some(secs(3600)))), Next::WaitTooLong(secs(3600)));
        assert_eq!(p.next(3, &status(500, None)), Next::GiveUp);
        assert_eq!(p.next(0, &status(400, None)), Next::GiveUp);
        let Next::Retry(d) = p.next(1, &status(503, None)) else { panic!("503 is retried") };
        assert!(d >= Duration::from_millis(500) && d <= Duration::from_secs(1), "{d:?}");
    }

    #[test]
    fn extreme_backoff_settings_do_not_panic() {
        let p = RetryPolicy::default().initial_backoff(Duration::MAX).max_backoff(Duration::MAX);
        for attempt in [0, 1, 31, u32::MAX] {
            assert!(p.backoff(attempt) > Duration::ZERO);
        }
    }
}
