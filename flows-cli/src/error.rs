//! What can go wrong, and the exit code each failure gives scripts.

use std::process::ExitCode;

use flow_core::store::StoreError;
use flows_cli::ops::OpError;

/// The process's exit status; the crate docs and `--help` list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok,
    Usage,
    NotFound,
    StoreUnavailable,
    Refused,
    Damaged,
    Invalid,
    WrongStatus,
    NotConfirmed,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Usage => 1,
            Exit::NotFound => 2,
            Exit::StoreUnavailable => 3,
            Exit::Refused => 4,
            Exit::Damaged => 5,
            Exit::Invalid => 6,
            Exit::WrongStatus => 7,
            Exit::NotConfirmed => 8,
        }
    }

    /// The name `--json` errors carry, for scripts that prefer words to numbers.
    pub fn kind(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Usage => "usage",
            Exit::NotFound => "not_found",
            Exit::StoreUnavailable => "store_unavailable",
            Exit::Refused => "refused",
            Exit::Damaged => "damaged",
            Exit::Invalid => "invalid_answer",
            Exit::WrongStatus => "wrong_status",
            Exit::NotConfirmed => "not_confirmed",
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// A failure, with what to tell the person and the code to exit with.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    /// More for `--json` errors (an invalid answer's violations), or null.
    pub details: serde_json::Value,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError { exit, message: message.into(), details: serde_json::Value::Null }
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Exit::StoreUnavailable, message)
    }
}

/// The exit code a store failure gives.
pub fn exit_of(e: &StoreError) -> Exit {
    match e {
        StoreError::NotFound(_) | StoreError::CheckpointNotFound { .. } => Exit::NotFound,
        StoreError::Locked { .. } => Exit::Refused,
        StoreError::Corrupt { .. } => Exit::Damaged,
        StoreError::Unsupported { .. } => Exit::Usage,
        _ => Exit::StoreUnavailable,
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::new(exit_of(&e), e.to_string())
    }
}

/// The exit code an operation's failure gives.
pub fn exit_of_op(e: &OpError) -> Exit {
    match e {
        OpError::InvalidAnswer { .. } => Exit::Invalid,
        OpError::NotPaused { .. } | OpError::NotFailed { .. } | OpError::Ended { .. } => Exit::WrongStatus,
        OpError::Executing { .. } => Exit::Refused,
        OpError::BadQuestion { .. } => Exit::Damaged,
        OpError::Store(e) => exit_of(e),
        _ => Exit::Usage,
    }
}

impl From<OpError> for CliError {
    fn from(e: OpError) -> Self {
        let mut error = CliError::new(exit_of_op(&e), e.to_string());
        if let OpError::InvalidAnswer { violations, .. } = &e {
            error.details = serde_json::json!({ "violations": violations });
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn store_failures_map_to_their_documented_codes() {
        let id = Uuid::nil();
        let cases = [
            (StoreError::NotFound(id), 2),
            (StoreError::CheckpointNotFound { run_id: id, seq: 3 }, 2),
            (StoreError::Locked { run_id: id, owner: "w".into(), expires_at_ms: 0 }, 4),
            (StoreError::Corrupt { run_id: id, what: "state".into(), detail: "x".into() }, 5),
            (StoreError::Open { path: "p".into(), message: "m".into() }, 3),
            (StoreError::Busy("b".into()), 3),
            (StoreError::SchemaTooNew { found: 9, supported: 3 }, 3),
            (StoreError::Unsupported { what: "deleting runs".into() }, 1),
        ];
        for (e, code) in cases {
            assert_eq!(exit_of(&e).code(), code, "{e}");
        }
    }
}
