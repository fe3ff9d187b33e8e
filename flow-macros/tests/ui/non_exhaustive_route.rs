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

struct Triage;

#[flow(state = S)]
impl Triage {
    #[start]
    async fn receive(&self) -> Result<()> {
        Ok(())
    }

    // `Ticket::Spam` has no listener and is not declared terminal.
    #[router(receive)]
    async fn classify(&self) -> Result<Ticket> {
        Ok(Ticket::Bug)
    }

    #[listen(Ticket::Bug)]
    async fn file_bug(&self) -> Result<()> {
        Ok(())
    }

    #[listen(Ticket::Question)]
    async fn answer(&self) -> Result<()> {
        Ok(())
    }
}

struct OptionalTriage;

#[flow(state = S)]
impl OptionalTriage {
    // `None` routes nowhere, but `Some(Ticket::Question)` and `Some(Ticket::Spam)` are unhandled.
    #[start]
    #[router(terminal(Ticket::Spam))]
    async fn classify(&self) -> Result<Option<Ticket>> {
        Ok(None)
    }

    #[listen(Ticket::Bug)]
    async fn file_bug(&self) -> Result<()> {
        Ok(())
    }
}

fn main() {
    let _ = (Ticket::Question, Ticket::Spam);
}
