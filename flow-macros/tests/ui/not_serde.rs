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

    #[listen(begin)]
    async fn remember(&self, cx: &Ctx<Memory>) -> Result<()> {
        let _ = cx;
        Ok(())
    }
}

// The same state in a flow with another mistake (the graph is not built): the state is still
// reported once per missing derive.
#[derive(Clone, Default, serde::Serialize)]
struct HalfMemory;

struct Broken;

#[flow(state = HalfMemory)]
impl Broken {
    #[start]
    async fn begin(&self) -> Result<()> {
        Ok(())
    }

    #[listen(begni)]
    async fn after(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {}
