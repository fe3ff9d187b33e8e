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
    let outcome = Order.kickoff(S).await.expect("a compensated failure is an outcome, not an error");
    let undone = outcome.compensated().expect("ship failed and charge was undone");
    assert_eq!(undone.method, "ship", "the outcome names the failing method");
    assert_eq!(REFUNDED.load(Ordering::SeqCst), 4242, "refund ran with charge's output");
}
