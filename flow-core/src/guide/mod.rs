//! The guide: how to write, run and operate flows, one chapter per concept.
//!
//! Read it in order the first time; each chapter's examples compile and run as tests, so what
//! they show is what the library does.
//!
//! 1. [`first_flow`]: a state, an `impl` block, `#[flow]`, and a run.
//! 2. [`state`]: reading and changing the state, and why parallel branches never lose updates.
//! 3. [`triggers`]: starts, listeners, `or` and `and`, routers and their routes, loops.
//! 4. [`options`]: every option of every attribute, and how durations are written.
//! 5. [`failures`]: error classes, retries, time limits, non-critical steps, undo steps,
//!    escalation, and what `kickoff` returns.
//! 6. [`durability`]: stores, checkpoints, journaled effects, resume, fork, timers, and workers
//!    on many machines.
//! 7. [`human_input`]: asking a person, pausing, and answering, from code or from `flows`.
//! 8. [`events`]: watching runs as they happen.
//! 9. [`plotting`]: drawing a flow's graph.

pub mod first_flow {
    #![doc = include_str!("first_flow.md")]
}
pub mod state {
    #![doc = include_str!("state.md")]
}
pub mod triggers {
    #![doc = include_str!("triggers.md")]
}
pub mod options {
    #![doc = include_str!("options.md")]
}
pub mod failures {
    #![doc = include_str!("failures.md")]
}
pub mod durability {
    #![doc = include_str!("durability.md")]
}
pub mod human_input {
    #![doc = include_str!("human_input.md")]
}
pub mod events {
    #![doc = include_str!("events.md")]
}
pub mod plotting {
    #![doc = include_str!("plotting.md")]
}
