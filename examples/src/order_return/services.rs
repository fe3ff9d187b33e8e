//! The systems the return talks to, faked: a flaky carrier label API, a mail relay that is
//! down, the order book, and the shop's warehouse and payments (a SQLite file, so a crashed
//! process's calls are still there after it dies).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use flow_core::{Error, Result};
use serde_json::json;
use uuid::Uuid;

use super::{CRASHING_ORDER, LATE_ORDER, Order, ReturnLabel, StockMovement, WAREHOUSE_ACK};
use crate::error::ExampleError;
use crate::service_db::{blocking, connect};

/// The carrier's label API, flaky the way real ones are: per order, the first call gets a
/// 503, the second hangs, the third succeeds.
#[derive(Debug, Default)]
pub struct LabelService {
    calls: Mutex<HashMap<String, u32>>,
}

impl LabelService {
    /// Creates a label for `order`; `key` lets the carrier deduplicate repeats.
    ///
    /// # Errors
    ///
    /// A transient error for the 503.
    pub async fn create(&self, order: &str, key: &str) -> Result<ReturnLabel> {
        let call = {
            let mut calls = self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = calls.entry(order.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        match call {
            1 => Err(Error::transient("carrier API returned 503 Service Unavailable")),
            2 => {
                // The carrier accepts the connection and never answers: the step's timeout ends it.
                tokio::time::sleep(Duration::from_secs(30)).await;
                Err(Error::transient("carrier API did not answer"))
            }
            _ => Ok(ReturnLabel {
                carrier: "PostNord".into(),
                tracking: format!("RL{:010}", flow_core::journal::request_hash(&json!(key)) % 10_000_000_000),
            }),
        }
    }
}

/// The mail relay.
#[derive(Debug)]
pub struct MailRelay {
    pub(super) down: bool,
}

impl MailRelay {
    /// Sends `body` to `to`.
    ///
    /// # Errors
    ///
    /// A transient error while the relay is down.
    pub async fn send(&self, to: &str, body: &str) -> Result<()> {
        if self.down {
            return Err(Error::transient("mail relay smtp.example.net:587 refused the connection"));
        }
        tracing::info!(%to, bytes = body.len(), "confirmation sent");
        Ok(())
    }
}

/// The order system (a fixed table here).
pub fn find_order(number: &str) -> Option<Order> {
    let order = |number: &str, email: &str, customer: &str, sku: &str, item: &str, cents: i64, days: u32| Order {
        number: number.into(),
        email: email.into(),
        customer: customer.into(),
        sku: sku.into(),
        item: item.into(),
        amount_cents: cents,
        delivered_days_ago: days,
    };
    [
        order(
            CRASHING_ORDER,
            "lena.berg@example.com",
            "Lena Berg",
            "BOOT-TRAIL-42",
            "Trail hiking boots, size 42",
            12_900,
            12,
        ),
        order(LATE_ORDER, "tom.hale@example.com", "Tom Hale", "ESP-PRO-2", "Espresso machine Pro 2", 34_900, 75),
    ]
    .into_iter()
    .find(|o| o.number.eq_ignore_ascii_case(number.trim()))
}

/// The shop's warehouse and payment ledger: tables in a SQLite file of their own (another
/// system, as far as the flow is concerned). Every write takes the effect's idempotency key
/// and counts repeats instead of applying them twice.
#[derive(Clone, Debug)]
pub struct Shop {
    path: PathBuf,
}

/// A row of the shop's tables.
#[derive(Clone, Debug, PartialEq)]
pub struct ShopRow {
    /// The idempotency key it was written under (`run_id:step_key:seq`).
    pub idempotency_key: String,
    /// The order.
    pub order_number: String,
    /// How many times the request arrived.
    pub requests: u32,
}

impl Shop {
    /// Opens the shop's file, creating its tables.
    ///
    /// # Errors
    ///
    /// [`ExampleError::Database`] when the file cannot be opened or written.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, ExampleError> {
        let shop = Shop { path: path.into() };
        let path = shop.path.clone();
        blocking(move || {
            let conn = connect(&path)?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS stock_movements (
                     id INTEGER PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE, order_number TEXT NOT NULL,
                     sku TEXT NOT NULL, quantity INTEGER NOT NULL, requests INTEGER NOT NULL DEFAULT 1);
                 CREATE TABLE IF NOT EXISTS refunds (
                     id INTEGER PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE, order_number TEXT NOT NULL,
                     amount_cents INTEGER NOT NULL, requests INTEGER NOT NULL DEFAULT 1);",
            )
        })
        .await??;
        Ok(shop)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts returned items back in stock, once per idempotency key.
    pub(super) async fn restock(
        &self,
        key: String,
        order: String,
        sku: String,
        quantity: u32,
    ) -> Result<StockMovement> {
        let path = self.path.clone();
        let (id, requests) = blocking(move || {
            let conn = connect(&path)?;
            conn.query_row(
                "INSERT INTO stock_movements (idempotency_key, order_number, sku, quantity) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (idempotency_key) DO UPDATE SET requests = requests + 1
                 RETURNING id, requests",
                rusqlite::params![key, order, sku, quantity],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, u32>(1)?)),
            )
        })
        .await
        .map_err(|e| Error::transient(format!("warehouse unreachable: {e}")))?
        .map_err(|e| Error::transient(format!("warehouse database: {e}")))?;
        // The warehouse system acknowledges slowly.
        tokio::time::sleep(WAREHOUSE_ACK).await;
        Ok(StockMovement { id, requests })
    }

    /// Refunds the order, once per idempotency key; returns the refund's id.
    pub(super) async fn refund(&self, key: String, order: String, amount_cents: i64) -> Result<String> {
        let path = self.path.clone();
        let id = blocking(move || {
            let conn = connect(&path)?;
            conn.query_row(
                "INSERT INTO refunds (idempotency_key, order_number, amount_cents) VALUES (?1, ?2, ?3)
                 ON CONFLICT (idempotency_key) DO UPDATE SET requests = requests + 1
                 RETURNING id",
                rusqlite::params![key, order, amount_cents],
                |row| row.get::<_, i64>(0),
            )
        })
        .await
        .map_err(|e| Error::transient(format!("payment provider unreachable: {e}")))?
        .map_err(|e| Error::transient(format!("payment ledger: {e}")))?;
        Ok(format!("re_{id:06}"))
    }

    /// The stock movements written by one run.
    ///
    /// # Errors
    ///
    /// [`ExampleError::Database`] when the file cannot be read.
    pub async fn stock_movements(&self, run_id: Uuid) -> Result<Vec<ShopRow>, ExampleError> {
        self.rows("stock_movements", run_id).await
    }

    /// The refunds written by one run.
    ///
    /// # Errors
    ///
    /// [`ExampleError::Database`] when the file cannot be read.
    pub async fn refunds(&self, run_id: Uuid) -> Result<Vec<ShopRow>, ExampleError> {
        self.rows("refunds", run_id).await
    }

    async fn rows(&self, table: &'static str, run_id: Uuid) -> Result<Vec<ShopRow>, ExampleError> {
        let path = self.path.clone();
        let rows = blocking(move || {
            let conn = connect(&path)?;
            let mut stmt = conn.prepare(&format!(
                "SELECT idempotency_key, order_number, requests FROM {table} WHERE idempotency_key LIKE ?1 ORDER BY id"
            ))?;
            let rows = stmt.query_map([format!("{run_id}:%")], |r| {
                Ok(ShopRow { idempotency_key: r.get(0)?, order_number: r.get(1)?, requests: r.get(2)? })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await??;
        Ok(rows)
    }
}
