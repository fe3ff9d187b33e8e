use flow_core::prelude::*;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

#[derive(Serialize, Deserialize, Route)]
enum Pick<T> {
    Keep(T),
    Drop,
}

trait Item: Serialize + DeserializeOwned + Send + Sync + 'static {}

// The route type names the impl's parameter, which a const check beside the impl cannot: a
// router none of whose routes is handled is still refused by the macro...
struct Nobody<T>(T);

#[flow(state = S)]
impl<T: Item> Nobody<T> {
    #[start]
    #[router]
    async fn pick(&self) -> Result<Pick<T>> {
        Ok(Pick::Drop)
    }
}

// ...but a single unhandled variant is left to rustc's exhaustiveness check.
struct Partly<T>(T);

#[flow(state = S)]
impl<T: Item> Partly<T> {
    #[start]
    #[router]
    async fn pick(&self) -> Result<Pick<T>> {
        Ok(Pick::Drop)
    }

    #[listen(Pick::Drop)]
    async fn drop_it(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {
    let _ = Pick::Keep(1u8);
}
