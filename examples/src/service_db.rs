//! The SQLite files the examples' fake services (a warehouse, a ticket desk) keep their own rows
//! in, apart from the runs' store: opened the same way by every service, used off the async
//! workers.

use std::path::Path;
use std::time::Duration;

/// Opens a service's file in WAL mode, waiting up to 5 s for another writer.
pub(crate) fn connect(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    Ok(conn)
}

/// Runs SQLite work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(std::io::Error::other)
}
