//! flow-core: compile-checked, durable, event-driven flows on tokio.
#![warn(missing_docs)]

pub mod error;
pub mod events;
pub mod graph;
pub mod journal;
pub mod store;

pub use error::{Classify, Error, ErrorClass, FlowError, Result};
pub use journal::{Journal, NoJournal, TokenUsage};
pub use store::RunStatus;

#[doc(hidden)]
pub mod __private {
    pub use crate::error::Classifier;
    pub use inventory;
}
