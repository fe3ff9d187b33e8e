//! Shared pieces of the example flows.
