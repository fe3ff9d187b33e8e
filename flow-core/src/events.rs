//! The typed event stream of a runner: what happened in each run, as it happens.
//!
//! ```
//! use flow_core::prelude::*;
//! use flow_core::events::FlowEvent;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Default, Serialize, Deserialize)]
//! struct S;
//! struct One;
//!
//! #[flow(state = S)]
//! impl One {
//!     #[start]
//!     async fn only(&self, _cx: &Ctx<S>) -> Result<()> { Ok(()) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), FlowError> {
//! let runner = Runner::new(One);
//! let mut events = runner.subscribe();
//! runner.kickoff(S).await?;
//! let first = events.recv().await.expect("event");
//! assert!(matches!(first, FlowEvent::RunStarted { .. }));
//! # Ok(())
//! # }
//! ```

use std::time::{Duration, SystemTime};

use uuid::Uuid;

use crate::error::ErrorClass;
use crate::journal::TokenUsage;
use crate::store::RunStatus;

/// One thing that happened in a run.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FlowEvent {
    /// A run started (`kickoff`) or was picked up again (`resume`).
    RunStarted {
        /// The run.
        run_id: Uuid,
        /// The flow's name.
        flow: &'static str,
        /// Whether this is a resume of a stored run.
        resumed: bool,
    },
    /// A run stopped: completed, paused, escalated or failed.
    RunFinished {
        /// The run.
        run_id: Uuid,
        /// How it stopped.
        status: RunStatus,
        /// Wall time of this execution (not counting earlier executions before a resume).
        duration: Duration,
    },
    /// A run failed.
    RunFailed {
        /// The run.
        run_id: Uuid,
        /// The method that failed, if one did.
        method: Option<&'static str>,
        /// The error.
        error: String,
    },
    /// A method attempt started.
    MethodStarted {
        /// The run.
        run_id: Uuid,
        /// The method.
        method: &'static str,
        /// The step key (`method#n`).
        step_key: String,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// A method completed.
    MethodFinished {
        /// The run.
        run_id: Uuid,
        /// The method.
        method: &'static str,
        /// The step key.
        step_key: String,
        /// Attempt number, from 1.
        attempt: u32,
        /// How long the attempt took.
        duration: Duration,
    },
    /// A method attempt failed.
    MethodFailed {
        /// The run.
        run_id: Uuid,
        /// The method.
        method: &'static str,
        /// The step key.
        step_key: String,
        /// Attempt number, from 1.
        attempt: u32,
        /// How long the attempt took.
        duration: Duration,
        /// The error.
        error: String,
        /// Its class.
        class: ErrorClass,
        /// When the next attempt starts, if one will.
        retry_in: Option<Duration>,
    },
    /// A router's route was taken (for a `terminal` route, no listener follows).
    RouteTaken {
        /// The run.
        run_id: Uuid,
        /// The router.
        router: &'static str,
        /// The route, `Enum::Variant`.
        route: String,
    },
    /// A method asked a person for input; the run is paused.
    Paused {
        /// The run.
        run_id: Uuid,
        /// The method waiting.
        method: &'static str,
        /// The question.
        prompt: String,
    },
    /// A method handed the run to a person (`Error::escalate`); the run ends escalated.
    Escalated {
        /// The run.
        run_id: Uuid,
        /// The method that escalated.
        method: &'static str,
        /// Why a person is needed.
        reason: String,
    },
    /// An undo step ran after a failure.
    Compensated {
        /// The run.
        run_id: Uuid,
        /// The undo method.
        method: &'static str,
        /// The method it undid.
        undoes: &'static str,
        /// The undo step's error, if it failed.
        error: Option<String>,
    },
    /// A method sleeps until `until` ([`Ctx::sleep`](crate::Ctx::sleep)).
    Sleeping {
        /// The run.
        run_id: Uuid,
        /// The method.
        method: &'static str,
        /// The step key.
        step_key: String,
        /// When it wakes.
        until: SystemTime,
        /// Whether the wait is long enough to park the run in the store (once nothing else of
        /// it runs, [`FlowEvent::Parked`]) rather than be spent in this process.
        parks: bool,
    },
    /// A sleeping method's wake time came: it goes on in this process (`parked: false`), or a
    /// parked run was continued and the method runs again (`parked: true`).
    Woke {
        /// The run.
        run_id: Uuid,
        /// The method.
        method: &'static str,
        /// The step key.
        step_key: String,
        /// Whether the run had been parked in the store meanwhile.
        parked: bool,
    },
    /// Nothing of the run could run before `until` (timers, retry backoffs): it is stored as
    /// queued until then with its lease given back, and a worker continues it when it is due.
    Parked {
        /// The run.
        run_id: Uuid,
        /// When it is due.
        until: SystemTime,
        /// The step keys that wait (sleeping steps and steps waiting for their next attempt).
        waiting: Vec<String>,
    },
    /// An LLM call reported token usage.
    LlmUsage {
        /// The run.
        run_id: Uuid,
        /// The method that made the call.
        method: &'static str,
        /// The model.
        model: String,
        /// Token counts.
        usage: TokenUsage,
    },
}

impl FlowEvent {
    /// The run the event belongs to.
    pub fn run_id(&self) -> Uuid {
        match self {
            FlowEvent::RunStarted { run_id, .. }
            | FlowEvent::RunFinished { run_id, .. }
            | FlowEvent::RunFailed { run_id, .. }
            | FlowEvent::MethodStarted { run_id, .. }
            | FlowEvent::MethodFinished { run_id, .. }
            | FlowEvent::MethodFailed { run_id, .. }
            | FlowEvent::RouteTaken { run_id, .. }
            | FlowEvent::Paused { run_id, .. }
            | FlowEvent::Escalated { run_id, .. }
            | FlowEvent::Compensated { run_id, .. }
            | FlowEvent::Sleeping { run_id, .. }
            | FlowEvent::Woke { run_id, .. }
            | FlowEvent::Parked { run_id, .. }
            | FlowEvent::LlmUsage { run_id, .. } => *run_id,
        }
    }
}
