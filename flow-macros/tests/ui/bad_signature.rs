use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

struct Shapes;

#[flow(state = S)]
impl Shapes {
    #[start]
    fn not_async(&self) -> Result<()> {
        Ok(())
    }

    #[start]
    async fn no_self() -> Result<()> {
        Ok(())
    }

    #[start]
    async fn mut_self(&mut self) -> Result<()> {
        Ok(())
    }

    #[start]
    async fn not_result(&self) -> String {
        String::new()
    }

    #[start]
    async fn no_return(&self) {}

    #[listen(not_async)]
    async fn too_many(&self, cx: &Ctx<S>, a: (), b: ()) -> Result<()> {
        let _ = (cx, a, b);
        Ok(())
    }

    #[listen(not_async)]
    async fn generic<T>(&self) -> Result<()> {
        Ok(())
    }

    #[listen(not_async)]
    async fn ctx_by_value(&self, cx: Ctx<S>) -> Result<()> {
        let _ = cx;
        Ok(())
    }
}

fn main() {}
