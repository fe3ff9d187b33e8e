//! flow-core: compile-checked, durable, event-driven flows on tokio.
#![warn(missing_docs)]

extern crate self as flow_core;

mod ctx;
pub mod error;
pub mod events;
mod flow;
pub mod graph;
pub mod input;
pub mod journal;
pub mod store;

pub use ctx::Ctx;
pub use error::{Classify, Error, ErrorClass, FlowError, Result};
pub use flow::{Flow, FlowRegistration, State, find_flow, registered_flows};
pub use flow_macros::{compensate, flow, listen, router, start};
pub use input::{InputRequest, PauseRequest};
pub use journal::{Journal, NoJournal, TokenUsage};
pub use store::RunStatus;

/// Everything a flow author needs, in one import.
pub mod prelude {
    pub use crate::{
        Ctx, Error, ErrorClass, Flow, FlowError, InputRequest, Journal, Result, compensate, flow, listen, router, start,
    };
}

/// What `#[flow]` expands to uses only these items, by absolute path.
#[doc(hidden)]
pub mod __private {
    pub use crate::ctx::Ctx;
    pub use crate::error::{Classifier, Error};
    pub use crate::flow::{
        Flow, FlowRegistration, Payload, StepOutput, StepResult, assert_output, assert_state, output, payload, route,
        unknown_method,
    };
    pub use crate::graph::{
        Backoff, FlowOptions, Graph, LabelDef, LabelId, MethodDef, MethodId, MethodPolicy, RetryPolicy, Trigger,
    };
    pub use futures::future::BoxFuture;
    pub use inventory;
    pub use std::boxed::Box;
    pub use std::option::Option::{self, None, Some};
    pub use std::sync::Arc;
    pub use std::time::Duration;
}
