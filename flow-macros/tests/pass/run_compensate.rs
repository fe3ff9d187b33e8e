//! Runs a flow whose step fails after its retries: the undo step of the completed method runs
//! with that method's output.

use std::sync::atomic::{AtomicU64, Ordering};

use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

static REFUNDED: AtomicU64 = AtomicU64::new(0);

struct Order;

#[flow(state = S)]
impl Order {
    #[start]
    async fn charge(&self) -> Result<u64> {
        Ok(4242)
    }

    #[listen(charge, retry(attempts = 2, backoff = fixed("0ms")))]
    async fn ship(&self, _charge_id: u64) -> Result<()> {
        Err(Error::permanent("no courier"))
    }

    #[compensate(charge)]
    async fn refund(&self, charge_id: u64) -> Result<()> {
        REFUNDED.store(charge_id, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let err = Order.kickoff(S).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("ship"), "the error names the failing method: {err}");
    assert_eq!(REFUNDED.load(Ordering::SeqCst), 4242, "refund ran with charge's output");
}
