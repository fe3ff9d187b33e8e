//! [`Hold`]: a signal a test gives the [`TestServer`](crate::TestServer) to keep the end of a
//! streamed reply back until the test has seen its first pieces arrive (rather than guessing
//! how long that takes).

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

/// Holds back the end of a streamed reply ([`Reply::hold_finish`](crate::Reply::hold_finish))
/// until [`Hold::release`] is called: the text pieces are sent, the chunk with the finish
/// reason (and the usage, and `[DONE]`) waits. Clones share one signal.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hold = flow_llm::server::Hold::new();
/// assert!(!hold.is_released());
/// hold.release();
/// hold.released().await;
/// # }
/// ```
#[derive(Clone)]
pub struct Hold {
    released: Arc<watch::Sender<bool>>,
}

impl Default for Hold {
    fn default() -> Self {
        Hold { released: Arc::new(watch::Sender::new(false)) }
    }
}

impl Hold {
    /// A hold not released yet.
    ///
    /// ```
    /// let hold = flow_llm::server::Hold::new();
    /// # let _ = hold;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets every reply held by it finish (now and from now on).
    ///
    /// ```
    /// let hold = flow_llm::server::Hold::new();
    /// hold.release();
    /// assert!(hold.is_released());
    /// ```
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    /// Whether [`Hold::release`] was called.
    ///
    /// ```
    /// assert!(!flow_llm::server::Hold::new().is_released());
    /// ```
    pub fn is_released(&self) -> bool {
        *self.released.borrow()
    }

    /// Waits until it is released.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hold = flow_llm::server::Hold::new();
    /// hold.release();
    /// hold.released().await;
    /// # }
    /// ```
    pub async fn released(&self) {
        let mut rx = self.released.subscribe();
        // The sender lives as long as this hold does, so the wait ends only by a release.
        let _ = rx.wait_for(|released| *released).await;
    }
}

impl PartialEq for Hold {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.released, &other.released)
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold").field("released", &self.is_released()).finish()
    }
}
