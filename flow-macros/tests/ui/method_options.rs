use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Options;

#[flow(state = S)]
impl Options {
    #[start(timeout = "10x")]
    async fn bad_duration(&self) -> Result<()> {
        Ok(())
    }

    #[listen(bad_duration, retry(attempts = 0))]
    async fn zero_attempts(&self) -> Result<()> {
        Ok(())
    }

    #[listen(bad_duration, retries = 3)]
    async fn unknown_option(&self) -> Result<()> {
        Ok(())
    }

    #[listen(bad_duration, timeout = "1s", timeout = "2s")]
    async fn duplicate_option(&self) -> Result<()> {
        Ok(())
    }

    #[listen(bad_duration, retry(attempts = 3, backoff = linear("1s")))]
    async fn unknown_backoff(&self) -> Result<()> {
        Ok(())
    }

    #[listen(bad_duration, retry(attempts = 3, backoff = exponential("5s", max = "1s"), jiter))]
    async fn bad_retry(&self) -> Result<()> {
        Ok(())
    }

    #[listen(bad_duration, timeout = "0s", non_critical = true)]
    async fn zero_timeout(&self) -> Result<()> {
        Ok(())
    }

    #[listen(bad_duration, zero_timeout)]
    async fn two_triggers(&self) -> Result<()> {
        Ok(())
    }

    #[listen(bad_duration, terminal)]
    async fn terminal_on_listener(&self) -> Result<()> {
        Ok(())
    }

    #[listen(bad_duration)]
    #[listen(zero_timeout)]
    async fn duplicate_attribute(&self) -> Result<()> {
        Ok(())
    }

    #[listen(xor(bad_duration, zero_timeout))]
    async fn unknown_combinator(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {}
