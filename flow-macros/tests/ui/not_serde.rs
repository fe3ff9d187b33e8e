use flow_core::prelude::*;

// Neither type derives Serialize / Deserialize, so neither can be persisted.
#[derive(Clone, Default)]
struct Memory;

struct Report;

struct Forgetful;

#[flow(state = Memory)]
impl Forgetful {
    #[start]
    async fn begin(&self) -> Result<Report> {
        Ok(Report)
    }
}

fn main() {}
