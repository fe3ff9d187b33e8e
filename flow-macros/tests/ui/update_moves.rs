use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct Article {
    text: String,
}

struct Writer;

#[flow(state = Article)]
impl Writer {
    #[start]
    async fn write(&self, cx: &Ctx<Article>) -> Result<()> {
        let text = String::from("draft");
        // An update may run more than once, so it cannot give its captured `text` away.
        cx.update(move |s| s.text = text);
        Ok(())
    }
}

fn main() {}
