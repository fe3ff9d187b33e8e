//! The helpdesk's ticket table (a SQLite file) with its save and delete tools, and the chat
//! tool that notifies a squad.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flow_llm::{FnTool, LlmError, ToolError};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{Priority, Squad};
use crate::error::ExampleError;
use crate::service_db::{blocking, connect};

/// The helpdesk's tickets table, in a SQLite file of its own.
#[derive(Clone, Debug)]
pub struct Helpdesk {
    path: PathBuf,
}

impl Helpdesk {
    /// Opens the file, creating the table.
    ///
    /// # Errors
    ///
    /// [`ExampleError::Database`] when the file cannot be opened or written.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, ExampleError> {
        let helpdesk = Helpdesk { path: path.into() };
        let path = helpdesk.path.clone();
        blocking(move || {
            connect(&path)?.execute_batch(
                "CREATE TABLE IF NOT EXISTS tickets (
                     id INTEGER PRIMARY KEY, ticket_id TEXT NOT NULL, squad TEXT NOT NULL, priority TEXT NOT NULL,
                     summary TEXT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE,
                     created_at TEXT NOT NULL DEFAULT (datetime('now')));",
            )
        })
        .await??;
        Ok(helpdesk)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ticket ids of the rows the given runs saved (and did not delete), sorted.
    ///
    /// # Errors
    ///
    /// [`ExampleError::Database`] when the file cannot be read.
    pub async fn saved_by(&self, runs: &[Uuid]) -> Result<Vec<String>, ExampleError> {
        let path = self.path.clone();
        let prefixes: Vec<String> = runs.iter().map(|r| format!("{r}:%")).collect();
        let mut ids = blocking(move || {
            let conn = connect(&path)?;
            let mut stmt = conn.prepare("SELECT ticket_id FROM tickets WHERE idempotency_key LIKE ?1")?;
            let mut ids = Vec::new();
            for prefix in &prefixes {
                for id in stmt.query_map([prefix], |r| r.get::<_, String>(0))? {
                    ids.push(id?);
                }
            }
            Ok::<_, rusqlite::Error>(ids)
        })
        .await??;
        ids.sort();
        Ok(ids)
    }

    /// The `save_ticket` tool: inserts a ticket, once per idempotency key; answers the row as
    /// JSON.
    ///
    /// # Errors
    ///
    /// [`LlmError`] when the tool's argument schema cannot be built.
    pub fn save_tool(&self) -> Result<FnTool, LlmError> {
        #[derive(Deserialize, JsonSchema)]
        struct Save {
            ticket_id: String,
            squad: Squad,
            priority: Priority,
            summary: String,
            /// Makes a repeated call a no-op.
            idempotency_key: String,
        }
        let path = self.path.clone();
        FnTool::new("save_ticket", "Saves a triaged ticket in the helpdesk and returns its row", move |a: Save| {
            let path = path.clone();
            async move {
                let (squad, priority) = (format!("{:?}", a.squad), format!("{:?}", a.priority));
                let row_id = blocking(move || {
                    connect(&path)?.query_row(
                        "INSERT INTO tickets (ticket_id, squad, priority, summary, idempotency_key) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (idempotency_key) DO UPDATE SET ticket_id = excluded.ticket_id
                         RETURNING id",
                        rusqlite::params![a.ticket_id, squad, priority, a.summary, a.idempotency_key],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .await
                .map_err(ToolError::new)?
                .map_err(ToolError::new)?;
                Ok::<_, ToolError>(json!({ "row_id": row_id }))
            }
        })
    }

    /// The `delete_ticket` tool: deletes a row.
    ///
    /// # Errors
    ///
    /// [`LlmError`] when the tool's argument schema cannot be built.
    pub fn delete_tool(&self) -> Result<FnTool, LlmError> {
        #[derive(Deserialize, JsonSchema)]
        struct Delete {
            row_id: i64,
        }
        let path = self.path.clone();
        FnTool::new("delete_ticket", "Deletes a ticket row from the helpdesk", move |a: Delete| {
            let path = path.clone();
            async move {
                let deleted =
                    blocking(move || connect(&path)?.execute("DELETE FROM tickets WHERE id = ?1", [a.row_id]))
                        .await
                        .map_err(ToolError::new)?
                        .map_err(ToolError::new)?;
                Ok::<_, ToolError>(format!("deleted {deleted} row(s) with id {}", a.row_id))
            }
        })
    }
}

/// The `notify_squad` tool: posts to a chat channel through its webhook; channels in `broken`
/// answer 503.
///
/// # Errors
///
/// [`LlmError`] when the tool's argument schema cannot be built.
pub fn notify_tool(broken: Vec<String>) -> Result<FnTool, LlmError> {
    #[derive(Deserialize, JsonSchema)]
    struct Notify {
        /// The channel, e.g. `#billing-queue`.
        channel: String,
        /// The message.
        text: String,
    }
    let broken: Arc<HashSet<String>> = Arc::new(broken.into_iter().collect());
    FnTool::new("notify_squad", "Posts a message to a squad's chat channel", move |n: Notify| {
        let broken = Arc::clone(&broken);
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if broken.contains(&n.channel) {
                return Err(ToolError::new(format!("webhook for {} returned 503 Service Unavailable", n.channel)));
            }
            Ok(format!("delivered to {} ({} chars)", n.channel, n.text.len()))
        }
    })
}
