//! Turning PostgreSQL's and the pool's failures into [`StoreError`]s a caller can act on.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::store::StoreError;

/// Which database errors are about, for messages: `postgres://user@host:port/db`, never the
/// password.
#[derive(Clone, Debug)]
pub(super) struct Pg {
    pub(super) shown: String,
}

impl Pg {
    /// Describes the database a connection configuration points at.
    pub(super) fn of(config: &tokio_postgres::Config) -> Self {
        let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
        let ports = config.get_ports();
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let host = match host {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                };
                // One port for every host, one per host, or the default.
                let port = ports.get(i).or_else(|| ports.first()).copied().unwrap_or(5432);
                format!("{host}:{port}")
            })
            .collect();
        let hosts = if hosts.is_empty() { "localhost:5432".to_string() } else { hosts.join(",") };
        let db = config.get_dbname().unwrap_or("");
        Pg { shown: format!("postgres://{user}{hosts}/{db}") }
    }

    /// A failure while opening the store (connecting, migrating).
    pub(super) fn open(&self, e: &tokio_postgres::Error) -> StoreError {
        if e.as_db_error().is_none() {
            return StoreError::Open {
                path: self.shown.clone(),
                message: format!(
                    "cannot reach PostgreSQL at {} ({}); check that the server is running there and accepts TCP \
                     connections, and that the URL's host and port are right",
                    self.shown,
                    chain(e)
                ),
            };
        }
        match self.map(e, None) {
            StoreError::Backend(message) => self.opening(message),
            other => other,
        }
    }

    /// The error's message says where already; `Open` says it once.
    fn opening(&self, message: String) -> StoreError {
        let prefix = format!("{}: ", self.shown);
        let message = message.strip_prefix(&prefix).map(str::to_string).unwrap_or(message);
        StoreError::Open { path: self.shown.clone(), message }
    }

    /// A failure of the pool to hand out a connection while opening the store.
    pub(super) fn open_pool(&self, e: PoolError) -> StoreError {
        if let PoolError::Backend(e) = &e {
            return self.open(e);
        }
        match self.pool(e, None) {
            StoreError::Backend(message) => self.opening(message),
            other => other,
        }
    }

    /// A failure of the pool to hand out a connection for an operation on `run`.
    pub(super) fn pool(&self, e: PoolError, run: Option<Uuid>) -> StoreError {
        match e {
            PoolError::Backend(e) => self.map(&e, run),
            PoolError::Timeout(which) => StoreError::Busy(format!(
                "{}no connection to PostgreSQL at {} came free or could be opened in time ({which:?} timeout); \
                 every connection of the pool is in use or the server is slow to answer: retry, give the pool \
                 more connections, or check the server",
                prefix(run),
                self.shown
            )),
            other => StoreError::Backend(format!(
                "{}cannot get a connection to PostgreSQL at {}: {other}",
                prefix(run),
                self.shown
            )),
        }
    }

    /// Maps a database failure in an operation on `run` (or on the store as a whole).
    pub(super) fn map(&self, e: &tokio_postgres::Error, run: Option<Uuid>) -> StoreError {
        let at = &self.shown;
        let run_prefix = prefix(run);
        let Some(db) = e.as_db_error() else {
            if lost_connection(e) {
                return StoreError::Backend(format!(
                    "{run_prefix}cannot reach PostgreSQL at {at} or lost the connection ({}); a write in flight \
                     may or may not have been applied: this is transient, retry (resume the run) once the server \
                     answers: the pool opens a new connection, and the lease epoch makes a retried write safe. \
                     If it persists, check that the server is running and accepts TCP connections there",
                    chain(e)
                ));
            }
            return StoreError::Backend(format!("{run_prefix}PostgreSQL at {at}: {e}"));
        };
        let code = db.code();
        let detail = format!("{}: {} (SQLSTATE {})", at, db.message(), code.code());
        if *code == SqlState::DISK_FULL || *code == SqlState::OUT_OF_MEMORY {
            StoreError::DiskFull(format!("{run_prefix}{detail}"))
        } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION || *code == SqlState::INSUFFICIENT_PRIVILEGE {
            StoreError::ReadOnly(format!(
                "{run_prefix}{detail}; connect as a role that may write the store's tables, to a primary, not a standby"
            ))
        } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE
        {
            StoreError::Busy(format!("{run_prefix}{detail}"))
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            StoreError::Backend(format!("{run_prefix}{detail}; create the database first (`createdb`)"))
        } else if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            StoreError::Backend(format!(
                "{run_prefix}{detail}; check the user and password in the URL and the server's pg_hba.conf"
            ))
        } else if code.code().starts_with("08")
            || code.code().starts_with("57P")
            || *code == SqlState::TOO_MANY_CONNECTIONS
        {
            // Connection exceptions and operator intervention: the server is restarting,
            // shutting down or full; nothing of this call was committed.
            StoreError::Backend(format!(
                "{run_prefix}{detail}; transient: the server is restarting or refusing connections, retry (resume \
                 the run) once it answers, the pool reconnects"
            ))
        } else if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED {
            StoreError::FileCorrupt { path: at.clone(), detail: format!("{run_prefix}{detail}") }
        } else {
            StoreError::Backend(format!("{run_prefix}{detail}"))
        }
    }
}

/// Whether the connection was lost (closed, or an I/O failure) rather than a statement refused:
/// a write sent on it may or may not have been applied.
pub(super) fn lost_connection(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none()
        && (e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()))
}

/// The error and its causes (`error connecting to server: Connection refused`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

fn prefix(run: Option<Uuid>) -> String {
    run.map(|id| format!("run {id}: ")).unwrap_or_default()
}

pub(super) use crate::store::decode::corrupt;
