//! LLM agents, tasks, crews and tools for flows.
