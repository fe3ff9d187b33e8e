use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Report;

#[flow(state = S)]
impl Report {
    #[start]
    async fn count(&self) -> Result<u32> {
        Ok(3)
    }

    #[listen(count)]
    async fn render(&self, cx: &Ctx<S>) -> Result<()> {
        // `count` returns `u32`: reading it as a `String` does not compile.
        let title: Option<String> = cx.output(Self::COUNT)?;
        let again = cx.output::<String>(Self::COUNT)?;
        let _ = (title, again);
        Ok(())
    }
}

fn main() {}
