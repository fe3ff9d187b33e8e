//! The attributes of the flows workspace: `#[flow]` on an impl block and `#[start]`,
//! `#[listen]`, `#[router]` and `#[compensate]` on its async methods. Use them through
//! `flow_core` (`use flow_core::prelude::*;`), which re-exports them.
//!
//! `#[flow]` sees the whole impl block at once: it reads the methods and their attributes
//! (`ast`, `attr`), checks the graph they form (`check`), and emits the impl block without
//! our attributes plus the `Flow` impl with a static graph and a dispatcher (`expand`).
//! Every problem is collected (`ctxt`) and reported at once, on the user's own token; type
//! questions (does this route variant exist, is this payload the type its trigger sends) are
//! asked of rustc by generated code spanned on the user's tokens.
//!
//! # Grammar
//!
//! ```text
//! #[flow(state = Type [, name = "..."] [, max_calls = N] [, retry(...)] [, timeout = "..."])]
//! impl MyFlow { ... }
//!
//! #[start]                         #[start(trigger, options...)]   #[start(options...)]
//! #[listen(trigger, options...)]
//! #[router(trigger, options...)]   #[start] #[router(options...)]  (a start that routes)
//! #[compensate(method, options...)]
//!
//! trigger  = method | Enum::Variant | or(trigger, trigger, ...) | and(trigger, trigger, ...)
//! options  = retry(attempts = N, backoff = fixed("1s") | exponential("500ms", max = "30s"),
//!                  jitter, invalid_reply = N)
//!          | timeout = "10s" | timeout = "none" | non_critical
//!          | terminal | terminal(Enum::Variant, ...)          (routers only)
//! duration = "<number><unit>..." (humantime: "250ms", "10s", "1m30s", "2h")
//! ```
//!
//! Every attempt of a method has a time limit: its own `timeout`, else the flow's, else
//! [`DEFAULT_STEP_TIMEOUT`](../flow_core/graph/constant.DEFAULT_STEP_TIMEOUT.html) (10 minutes),
//! so a hung call ends. `timeout = "none"` removes the limit.
//!
//! A method is `async fn name(&self [, cx: &Ctx<State>] [, input: T]) -> Result<U>` (any
//! `Result<U>` or `Result<U, E>` whose error converts into `flow_core::Error`), or the same as a
//! plain `fn` for blocking work (a blocking client, file or CPU work): a plain `fn` runs on
//! tokio's blocking thread pool, so blocking branches overlap like threads and its `timeout`
//! still ends the step (the run moves on; the thread's late result is dropped). It can read and
//! update the state but not await (`cx.ask`, `cx.effect` need an `async fn`).

mod ast;
mod attr;
mod check;
mod ctxt;
mod duration;
mod expand;
mod route;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;

/// Turns an inherent impl block into a flow: an event graph of its annotated async methods,
/// built and checked at compile time.
///
/// Options (the [options chapter](../flow_core/guide/options/index.html) of the guide has them
/// all in one place):
///
/// - `state = Type` (required): the run's state, `Clone + Default + Serialize + Deserialize`;
/// - `name = "..."`: the name the flow is registered and stored under (default: the type's name);
/// - `max_calls = N`: how often one method may run in one run (default 100), so that a loop that
///   never ends is an error rather than a hung run;
/// - `retry(attempts = N, backoff = fixed("1s") | exponential("500ms", max = "30s"), jitter,
///   invalid_reply = N)`: the default retry policy of every method;
/// - `timeout = "30s"` or `timeout = "none"`: the default time limit of every attempt (10 minutes
///   unless set);
/// - `on_failure = "cancel_running"` (the default) or `"finish_running"`: whether the methods still
///   running are stopped at once when a method fails for good, or left to finish first;
/// - `park_after = "10s"` or `"never"`: how far away a timer or a retry must be for a durable run
///   to park in its store instead of waiting in the process (default 10 s).
///
/// Durations are numbers each with a unit, as `humantime` reads them: `ms`, `s`, `m`,
/// `h`, `d` and their long forms (`"250ms"`, `"10s"`, `"1m30s"`, `"2h"`), checked at compile
/// time down to the millisecond.
///
/// ```
/// use flow_core::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct Article { topic: String, rounds: u32, text: String }
///
/// #[derive(Clone, Copy, Debug, Serialize, Deserialize, Route)]
/// enum Quality { Sufficient, Insufficient }
///
/// struct Writer;
///
/// #[flow(state = Article, name = "writer", max_calls = 10, timeout = "30s")]
/// impl Writer {
///     #[start]
///     async fn topic(&self, cx: &Ctx<Article>) -> Result<String> {
///         Ok(cx.read(|s| s.topic.clone()))
///     }
///
///     #[listen(topic)]
///     async fn research(&self, _cx: &Ctx<Article>, topic: String) -> Result<()> {
///         let _ = topic;
///         Ok(())
///     }
///
///     #[router(or(research, deepen), retry(attempts = 3, backoff = fixed("1s")))]
///     async fn evaluate(&self, cx: &Ctx<Article>) -> Result<Quality> {
///         cx.update(|s| s.rounds += 1);
///         Ok(if cx.read(|s| s.rounds) > 1 { Quality::Sufficient } else { Quality::Insufficient })
///     }
///
///     #[listen(Quality::Insufficient)]
///     async fn deepen(&self) -> Result<()> {
///         Ok(())
///     }
///
///     #[listen(Quality::Sufficient)]
///     async fn write(&self, cx: &Ctx<Article>, q: Quality) -> Result<String> {
///         let text = format!("{q:?}");
///         cx.update(move |s| s.text = text.clone());
///         Ok("done".into())
///     }
/// }
///
/// let graph = Writer::graph();
/// assert_eq!(graph.name, "writer");
/// assert_eq!(graph.methods.len(), 5);
/// assert!(graph.to_mermaid().contains("evaluate -->|Sufficient| write"));
/// ```
///
/// A wrong graph does not compile; for example a trigger that names no method:
///
/// ```compile_fail
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
/// struct F;
/// #[flow(state = S)]
/// impl F {
///     #[start] async fn fetch(&self) -> Result<()> { Ok(()) }
///     #[listen(fetsh)] // error: no method named `fetsh` in flow `F`: did you mean `fetch`?
///     async fn store(&self) -> Result<()> { Ok(()) }
/// }
/// ```
#[proc_macro_attribute]
pub fn flow(args: TokenStream, input: TokenStream) -> TokenStream {
    expand_flow(args.into(), input.into()).into()
}

fn expand_flow(args: TokenStream2, input: TokenStream2) -> TokenStream2 {
    let item = match syn::parse2::<syn::Item>(input.clone()) {
        Ok(syn::Item::Impl(item)) => item,
        Ok(_) => {
            let err = syn::Error::new(
                Span::call_site(),
                "#[flow] goes on an inherent impl block: `#[flow(state = MyState)] impl MyFlow { ... }`",
            )
            .to_compile_error();
            return quote!(#err #input);
        }
        Err(err) => {
            let err = err.to_compile_error();
            return quote!(#err #input);
        }
    };
    let cx = ctxt::Ctxt::new();
    let flow = ast::Flow::from_impl(&cx, args, item);
    // The checks run even after front-end errors, so that every error shows in one build.
    let graph = check::check(&cx, &flow);
    match cx.check() {
        Ok(()) => expand::expand(&graph),
        Err(errors) => expand::fallback(&flow, errors),
    }
}

/// The error for one of our method attributes outside a `#[flow]` impl: `#[flow]` removes them
/// from its methods, so any that reaches its own expansion is misplaced. The item is emitted
/// unchanged so that nothing else fails.
fn outside_flow(name: &str, item: TokenStream) -> TokenStream {
    let item = TokenStream2::from(item);
    let err = syn::Error::new(
        Span::call_site(),
        format!(
            "`#[{name}]` only works on an async method inside a flow: put `#[flow(state = MyState)]` on the impl \
             block that contains this method"
        ),
    )
    .to_compile_error();
    quote!(#err #item).into()
}

/// Marks a method that begins a run.
///
/// `#[start]` runs at kickoff; every unconditional start of a flow runs concurrently. With a
/// trigger, `#[start(Route::Variant)]` (or any trigger), it is a conditional start: it runs
/// when its trigger fires. Options: `retry(attempts = N, backoff = .., jitter, invalid_reply = N)`,
/// `timeout = "..."` (or `"none"`), `non_critical` (see the
/// [options chapter](../flow_core/guide/options/index.html)). Valid only inside a `#[flow]` impl.
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
/// struct Two;
///
/// #[flow(state = S)]
/// impl Two {
///     #[start]
///     async fn a(&self) -> Result<()> { Ok(()) }
///
///     #[start(timeout = "5s")]
///     async fn b(&self) -> Result<()> { Ok(()) }
/// }
///
/// assert_eq!(Two::graph().starts().count(), 2);
/// ```
#[proc_macro_attribute]
pub fn start(_args: TokenStream, item: TokenStream) -> TokenStream {
    outside_flow("start", item)
}

/// Runs a method when its trigger fires: `#[listen(method)]`, `#[listen(Route::Variant)]`,
/// `#[listen(or(a, b))]` (the first of them), `#[listen(and(a, b))]` (all of them); `or` and
/// `and` nest.
///
/// The method may take its trigger's output as a parameter (for a route, the route value);
/// rustc checks its type. Options: `retry(attempts = N, backoff = .., jitter, invalid_reply = N)`,
/// `timeout = "..."` (or `"none"`), `non_critical` (see the
/// [options chapter](../flow_core/guide/options/index.html)). Valid only inside a `#[flow]` impl.
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
/// struct Join;
///
/// #[flow(state = S)]
/// impl Join {
///     #[start]
///     async fn left(&self) -> Result<u32> { Ok(1) }
///
///     #[start]
///     async fn right(&self) -> Result<u32> { Ok(2) }
///
///     #[listen(or(left, right))]
///     async fn first(&self, n: u32) -> Result<u32> { Ok(n) }
///
///     #[listen(and(left, right), retry(attempts = 2), non_critical)]
///     async fn both(&self) -> Result<()> { Ok(()) }
/// }
///
/// let g = Join::graph();
/// let both = g.method_id("both").expect("declared above");
/// assert_eq!(g.trigger_text(both).as_deref(), Some("and(left, right)"));
/// ```
#[proc_macro_attribute]
pub fn listen(_args: TokenStream, item: TokenStream) -> TokenStream {
    outside_flow("listen", item)
}

/// Makes a method a router: it returns a route enum (`Result<Route>`, or
/// `Result<Option<Route>>` where `None` routes nowhere), and the listeners of the variant it
/// returns run next.
///
/// Every variant must be handled by a listener or declared terminal: `terminal(Route::Done)`
/// lists variants that end the branch, a bare `terminal` ends every unhandled variant.
/// `#[router(trigger)]`, or `#[start] #[router]` for a start that routes. Options:
/// `retry(attempts = N, backoff = .., jitter, invalid_reply = N)`, `timeout = "..."` (or
/// `"none"`), `non_critical`, `terminal` or `terminal(Route::A, ..)` (see the
/// [options chapter](../flow_core/guide/options/index.html)). Valid only inside a `#[flow]` impl.
///
/// ```
/// use flow_core::prelude::*;
/// use serde::{Deserialize, Serialize};
/// # #[derive(Clone, Default, Serialize, Deserialize)] struct S;
/// #[derive(Serialize, Deserialize, Route)]
/// enum Ticket { Bug, Question, Spam }
/// struct Triage;
///
/// #[flow(state = S)]
/// impl Triage {
///     #[start]
///     #[router(terminal(Ticket::Spam))]
///     async fn classify(&self) -> Result<Ticket> { Ok(Ticket::Bug) }
///
///     #[listen(Ticket::Bug)]
///     async fn file_bug(&self) -> Result<()> { Ok(()) }
///
///     #[listen(Ticket::Question)]
///     async fn answer(&self, t: Ticket) -> Result<()> { let _ = t; Ok(()) }
/// }
///
/// assert_eq!(Triage::graph().labels.len(), 2);
/// ```
#[proc_macro_attribute]
pub fn router(_args: TokenStream, item: TokenStream) -> TokenStream {
    outside_flow("router", item)
}

/// Declares the undo step of a method: `#[compensate(save_ticket)]`. When a run fails after its
/// retries, the undo steps of the methods that completed run in reverse order of completion.
///
/// The method is not part of the normal graph and has no trigger; it may take the undone
/// method's output as its parameter (rustc checks the type). Options:
/// `retry(attempts = N, backoff = .., jitter)`, `timeout = "..."` (or `"none"`). An undo step
/// that fails is tried again when the run is resumed. Valid only inside a `#[flow]` impl.
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
/// struct Refund;
///
/// #[flow(state = S)]
/// impl Refund {
///     #[start]
///     async fn charge(&self) -> Result<u64> { Ok(42) }
///
///     #[compensate(charge, retry(attempts = 5, backoff = exponential("1s", max = "1m")))]
///     async fn refund(&self, charge_id: u64) -> Result<()> { let _ = charge_id; Ok(()) }
/// }
///
/// let g = Refund::graph();
/// assert_eq!(g.methods[1].compensates, g.method_id("charge"));
/// ```
#[proc_macro_attribute]
pub fn compensate(_args: TokenStream, item: TokenStream) -> TokenStream {
    outside_flow("compensate", item)
}

/// Derives `flow_core::Route` for an enum a router returns: `#[derive(Route)]`, beside
/// `Serialize` and `Deserialize`.
///
/// It tells `#[flow]` the enum's variants, so that a variant no listener handles and no
/// `terminal(..)` ends is a compile error that names the variant, the router and the fixes.
///
/// ```
/// use flow_core::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Copy, Debug, Serialize, Deserialize, Route)]
/// enum Verdict { Approve, Reject }
///
/// assert_eq!(<Verdict as Route>::VARIANTS, ["Approve", "Reject"]);
/// ```
#[proc_macro_derive(Route)]
pub fn derive_route(input: TokenStream) -> TokenStream {
    route::derive(input.into()).into()
}
