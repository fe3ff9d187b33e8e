use flow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct S;

#[flow(state = S)]
struct NotAnImpl;

trait Runs {
    fn run(&self);
}

#[flow(state = S)]
impl Runs for NotAnImpl {
    fn run(&self) {}
}

fn main() {}
