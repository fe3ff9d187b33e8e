use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

#[derive(Serialize, Deserialize, Route)]
enum Ticket {
    Bug,
    Question,
    Spam,
}

trait Model: Send + Sync + 'static {}

// A generic flow whose route type does not name the impl's parameters is checked like any other.
struct Triage<M> {
    model: M,
}

#[flow(state = S)]
impl<M: Model> Triage<M> {
    #[start]
    #[router]
    async fn classify(&self) -> Result<Ticket> {
        let _ = &self.model;
        Ok(Ticket::Bug)
    }

    #[listen(Ticket::Bug)]
    async fn file_bug(&self) -> Result<()> {
        Ok(())
    }
}

struct ByName<M> {
    model: M,
}

#[flow(state = S)]
impl<M: Model> ByName<M> {
    #[start]
    #[router]
    async fn classify(&self) -> Result<Option<Ticket>> {
        let _ = &self.model;
        Ok(None)
    }

    #[listen(classify)]
    async fn handle(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {
    let _ = (Ticket::Question, Ticket::Spam);
}
