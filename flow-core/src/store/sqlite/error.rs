//! Turning SQLite's result codes into [`StoreError`]s a caller can act on.

use std::path::Path;

use rusqlite::ErrorCode;
use uuid::Uuid;

use crate::store::StoreError;

/// Maps a SQLite failure on the store at `path` to the [`StoreError`] that says what to do.
///
/// Takes the error by reference because one failed COMMIT is reported to every request of its
/// batch.
pub(super) fn map(e: &rusqlite::Error, path: &Path) -> StoreError {
    let shown = path.display();
    let Some(failure) = e.sqlite_error() else {
        return StoreError::Backend(format!("{shown}: {e}"));
    };
    match failure.code {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Busy(format!("{shown}: {e}")),
        ErrorCode::DiskFull => StoreError::DiskFull(format!("{shown}: {e}")),
        ErrorCode::ReadOnly | ErrorCode::PermissionDenied => StoreError::ReadOnly(format!("{shown}: {e}")),
        ErrorCode::CannotOpen => StoreError::Open {
            path: shown.to_string(),
            message: format!(
                "{e}; check that the directory exists and that this process may create files in it \
                 (SQLite keeps `-wal` and `-shm` files beside the database)"
            ),
        },
        ErrorCode::NotADatabase => StoreError::Open {
            path: shown.to_string(),
            message: format!("{e}: the file is not a SQLite database; point the store at another path"),
        },
        ErrorCode::DatabaseCorrupt => StoreError::FileCorrupt { path: shown.to_string(), detail: e.to_string() },
        _ => StoreError::Backend(format!("{shown}: {e} (SQLite extended code {})", failure.extended_code)),
    }
}

/// Whether SQLite gave up waiting for another connection's lock.
pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

pub(super) use crate::store::decode::corrupt;

/// Reading a column failed: a value of the wrong type or invalid UTF-8 is damage to that row;
/// anything else is the database's own failure.
pub(super) fn column(e: rusqlite::Error, run_id: Uuid, what: &str, path: &Path) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..)
        | rusqlite::Error::InvalidColumnType(..) => corrupt(run_id, what, e),
        other => map(&other, path),
    }
}

/// The writer thread is gone: its channel closed, or it dropped a reply while panicking.
pub(super) fn writer_stopped(path: &Path) -> StoreError {
    StoreError::Backend(format!(
        "{}: the SQLite writer thread has stopped (it panicked; see the log); reopen the store",
        path.display()
    ))
}
