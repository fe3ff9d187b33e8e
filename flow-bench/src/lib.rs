//! flow-bench: the engine-overhead benchmarks of flows on the workloads of
//! `bench/WORKLOADS.md`, the same ones the Python reference engines (CrewAI Flows, LangGraph)
//! were measured on, plus the hand-written limits our overhead is compared with.
//!
//! The binary (`flow-bench`) runs one workload per process and prints one JSON line per
//! measurement with the reference scripts' field names; see `BENCHMARKS.md` at the root of the
//! workspace. The library holds the flows, the limits and the measurement code, so the
//! Criterion benchmarks (`benches/`) run exactly the same flows.

#![warn(missing_docs)]

pub mod bare_sql;
pub mod flows;
pub mod limit;
pub mod measure;
pub mod memory;
pub mod pg;
pub mod workloads;
