use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

#[derive(Serialize, Deserialize, Route)]
enum Quality {
    Good,
    Bad,
}

struct Pipeline;

#[flow(state = S)]
impl Pipeline {
    #[start]
    async fn fetch(&self) -> Result<String> {
        Ok(String::new())
    }

    #[start]
    async fn count(&self) -> Result<u32> {
        Ok(0)
    }

    // `fetch` returns a String.
    #[listen(fetch)]
    async fn parse(&self, cx: &Ctx<S>, n: u32) -> Result<()> {
        let _ = (cx, n);
        Ok(())
    }

    // Every trigger of an `or` must send the parameter's type: `count` sends a u32.
    #[listen(or(fetch, count))]
    async fn log(&self, line: String) -> Result<()> {
        let _ = line;
        Ok(())
    }

    #[router(fetch)]
    async fn judge(&self) -> Result<Quality> {
        Ok(Quality::Good)
    }

    // A route listener receives the route value.
    #[listen(Quality::Good)]
    async fn keep(&self, q: String) -> Result<()> {
        let _ = q;
        Ok(())
    }

    #[listen(Quality::Bad)]
    async fn drop_it(&self, q: Quality) -> Result<()> {
        let _ = q;
        Ok(())
    }
}

fn main() {}
