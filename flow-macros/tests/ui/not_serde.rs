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

    // The context's methods still type-check: the missing derives are not reported again here.
    #[listen(begin)]
    async fn remember(&self, cx: &Ctx<Memory>) -> Result<()> {
        cx.update(|s| *s = Memory);
        let _copy: Memory = cx.read(Memory::clone);
        let _ = cx.state();
        let n: u32 = cx.effect("count", |_key| async { Ok(1) }).await?;
        let _ = n;
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
