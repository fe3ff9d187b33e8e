//! Which store to open, and opening it behind the `Store` trait.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flow_core::store::{PgStore, SqliteOptions, SqliteStore, Store, StoreError};

use crate::error::CliError;

/// Where the store is, and which setting said so (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Sqlite { path: PathBuf, from: &'static str },
    Postgres { url: String, from: &'static str },
}

/// The store the flags and the environment name, in their order of precedence: `--db`,
/// `--database-url`, `$FLOWS_DB`, `$DATABASE_URL`. Empty values count as unset.
pub fn select(
    db: Option<PathBuf>,
    database_url: Option<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Source, CliError> {
    let set = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    if let Some(path) = db.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(Source::Sqlite { path, from: "--db" });
    }
    if let Some(url) = set(database_url) {
        return Ok(Source::Postgres { url, from: "--database-url" });
    }
    if let Some(path) = set(env("FLOWS_DB")) {
        return Ok(Source::Sqlite { path: PathBuf::from(path), from: "$FLOWS_DB" });
    }
    if let Some(url) = set(env("DATABASE_URL")) {
        return Ok(Source::Postgres { url, from: "$DATABASE_URL" });
    }
    let mut message = "no store given: pass --db PATH for a SQLite file or --database-url URL for PostgreSQL, \
                       or set FLOWS_DB or DATABASE_URL"
        .to_string();
    let default = Path::new(".flows").join("runs.db");
    if default.is_file() {
        message.push_str(&format!(
            "; runs stored with `SqliteStore::open_default` from this directory are in {}: try `--db {}`",
            default.display(),
            default.display()
        ));
    }
    Err(CliError::unavailable(message))
}

/// Opens the store. `writes` says whether the command changes it: a SQLite file is opened
/// read-only for commands that only read, so a file this process may only read can be
/// inspected too.
pub async fn open(source: &Source, writes: bool) -> Result<Arc<dyn Store>, CliError> {
    match source {
        Source::Sqlite { path, from } => {
            if !path.exists() {
                return Err(CliError::unavailable(format!(
                    "{from}: no store at {}: the file does not exist (flows opens the file a flow's runner \
                     wrote and never creates one); check the path",
                    path.display()
                )));
            }
            // A command that only reads opens the file read-only, so looking never changes it;
            // a file a newer build migrated and an older one not yet migrated are the
            // exceptions: the first is refused either way, the second is migrated by opening
            // it writable, as any flows program would.
            let opened = if writes {
                SqliteStore::open(path).await
            } else {
                match SqliteStore::open_with(SqliteOptions::new(path).read_only(true)).await {
                    Err(StoreError::ReadOnly(read_only)) => match SqliteStore::open(path).await {
                        // Neither way: the read-only reason says why reading failed.
                        Err(StoreError::ReadOnly(_)) => Err(StoreError::ReadOnly(read_only)),
                        other => other,
                    },
                    other => other,
                }
            };
            let store = opened.map_err(|e| CliError::unavailable(format!("{from}: {e}")))?;
            Ok(Arc::new(store))
        }
        Source::Postgres { url, from } => {
            // The store's messages name the host, port and database, never the password, so
            // the URL itself is not repeated here.
            let store = PgStore::connect(url).await.map_err(|e| CliError::unavailable(format!("{from}: {e}")))?;
            Ok(Arc::new(store))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn flags_come_before_the_environment_and_sqlite_before_postgres() -> Result<(), String> {
        let both = [("FLOWS_DB", "env.db"), ("DATABASE_URL", "postgres://env/db")];
        let pick = |db: Option<&str>, url: Option<&str>, vars| {
            select(db.map(PathBuf::from), url.map(String::from), env(vars)).map_err(|e| e.message)
        };
        assert_eq!(
            pick(Some("flag.db"), Some("postgres://flag/db"), &both)?,
            Source::Sqlite { path: "flag.db".into(), from: "--db" }
        );
        assert_eq!(
            pick(None, Some("postgres://flag/db"), &both)?,
            Source::Postgres { url: "postgres://flag/db".into(), from: "--database-url" }
        );
        assert_eq!(pick(None, None, &both)?, Source::Sqlite { path: "env.db".into(), from: "$FLOWS_DB" });
        assert_eq!(
            pick(None, None, &[("FLOWS_DB", " "), ("DATABASE_URL", "postgres://env/db")])?,
            Source::Postgres { url: "postgres://env/db".into(), from: "$DATABASE_URL" }
        );
        Ok(())
    }

    #[test]
    fn no_store_names_every_way_to_give_one() {
        let e = select(None, Some(String::new()), env(&[])).err().map(|e| (e.exit.code(), e.message));
        let (code, message) = e.unwrap_or_default();
        assert_eq!(code, 3);
        for name in ["--db", "--database-url", "FLOWS_DB", "DATABASE_URL"] {
            assert!(message.contains(name), "{message}");
        }
    }
}
