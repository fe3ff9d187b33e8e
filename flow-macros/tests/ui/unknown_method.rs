use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Research;

#[flow(state = S)]
impl Research {
    #[start]
    async fn research(&self) -> Result<String> {
        Ok(String::new())
    }

    // A typo: the closest method is suggested.
    #[listen(reserch)]
    async fn summarize(&self, text: String) -> Result<()> {
        let _ = text;
        Ok(())
    }

    // Nothing close: the flow's methods are listed.
    #[listen(or(research, publish))]
    async fn archive(&self) -> Result<()> {
        Ok(())
    }

    // A method of the impl that is not a step of the flow.
    #[listen(helper)]
    async fn audit(&self) -> Result<()> {
        Ok(())
    }

    fn helper(&self) {}
}

fn main() {}
