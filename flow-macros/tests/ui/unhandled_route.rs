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

struct ByName;

#[flow(state = S)]
impl ByName {
    #[start]
    #[router]
    async fn classify(&self) -> Result<Ticket> {
        Ok(Ticket::Bug)
    }

    // CrewAI habit: listening to the router's name instead of its routes.
    #[listen(classify)]
    async fn handle(&self) -> Result<()> {
        Ok(())
    }
}

struct InAnOr;

#[flow(state = S)]
impl InAnOr {
    #[start]
    async fn receive(&self) -> Result<()> {
        Ok(())
    }

    #[router(receive)]
    async fn classify(&self) -> Result<Ticket> {
        Ok(Ticket::Bug)
    }

    // Two listeners on the router's name: each is told, once.
    #[listen(or(receive, classify))]
    async fn log(&self) -> Result<()> {
        Ok(())
    }

    #[listen(classify)]
    async fn handle(&self) -> Result<()> {
        Ok(())
    }
}

struct Nobody;

#[flow(state = S)]
impl Nobody {
    #[start]
    #[router]
    async fn classify(&self) -> Result<Option<Ticket>> {
        Ok(None)
    }
}

fn main() {
    let _ = (Ticket::Bug, Ticket::Question, Ticket::Spam);
}
