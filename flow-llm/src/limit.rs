//! [`ConcurrencyLimit`]: how many LLM requests may be in flight at once.
//!
//! Every [`OpenAiLlm`](crate::OpenAiLlm) built without an explicit limit shares one process-wide
//! limit, so a thousand concurrent flow runs queue here instead of flooding the endpoint.
//!
//! ```
//! use flow_llm::ConcurrencyLimit;
//!
//! let a = ConcurrencyLimit::shared();
//! let b = ConcurrencyLimit::shared();
//! assert!(a.same_as(&b));
//! assert!(!ConcurrencyLimit::new(4).same_as(&a));
//! ```

use std::sync::{Arc, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits of the process-wide limit when `FLOW_LLM_MAX_CONCURRENCY` is not set.
///
/// ```
/// assert_eq!(flow_llm::limit::DEFAULT_SHARED_PERMITS, 16);
/// ```
pub const DEFAULT_SHARED_PERMITS: usize = 16;

/// A limit on concurrent LLM requests, shared by every client that holds a clone.
///
/// ```
/// use flow_llm::ConcurrencyLimit;
/// let limit = ConcurrencyLimit::new(2);
/// assert_eq!(limit.permits(), 2);
/// assert_eq!(limit.available(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit {
    semaphore: Arc<Semaphore>,
    permits: usize,
}

impl ConcurrencyLimit {
    /// A new limit of `permits` concurrent requests (at least 1).
    ///
    /// ```
    /// assert_eq!(flow_llm::ConcurrencyLimit::new(0).permits(), 1);
    /// ```
    pub fn new(permits: usize) -> Self {
        let permits = permits.clamp(1, Semaphore::MAX_PERMITS);
        ConcurrencyLimit { semaphore: Arc::new(Semaphore::new(permits)), permits }
    }

    /// The process-wide limit every client uses by default. Its size is read once from
    /// `FLOW_LLM_MAX_CONCURRENCY`, or is [`DEFAULT_SHARED_PERMITS`].
    ///
    /// ```
    /// assert!(flow_llm::ConcurrencyLimit::shared().permits() >= 1);
    /// ```
    pub fn shared() -> Self {
        static SHARED: OnceLock<ConcurrencyLimit> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let permits = std::env::var("FLOW_LLM_MAX_CONCURRENCY")
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(DEFAULT_SHARED_PERMITS);
                ConcurrencyLimit::new(permits)
            })
            .clone()
    }

    /// The number of concurrent requests allowed.
    ///
    /// ```
    /// assert_eq!(flow_llm::ConcurrencyLimit::new(3).permits(), 3);
    /// ```
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Permits free right now.
    ///
    /// ```
    /// assert_eq!(flow_llm::ConcurrencyLimit::new(3).available(), 3);
    /// ```
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Whether both are the same limit (clones of one another).
    ///
    /// ```
    /// let a = flow_llm::ConcurrencyLimit::new(1);
    /// assert!(a.same_as(&a.clone()));
    /// ```
    pub fn same_as(&self, other: &ConcurrencyLimit) -> bool {
        Arc::ptr_eq(&self.semaphore, &other.semaphore)
    }

    /// Waits for a permit; the request may run while the permit lives.
    pub(crate) async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        // The semaphore is never closed, so an error cannot happen; running without a permit
        // would still be better than failing the call.
        self.semaphore.clone().acquire_owned().await.ok()
    }
}
