//! Attribute macros of the flows workspace; use them through `flow_core`.
