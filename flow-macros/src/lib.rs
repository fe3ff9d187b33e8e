//! Attribute macros of the flows workspace; use them through `flow_core`.
//!
//! Placeholder entry points while the real front end is written (see flow-macros tasks).

use proc_macro::TokenStream;

fn pending(name: &str) -> TokenStream {
    format!("compile_error!(\"#[{name}] is being implemented\");").parse().unwrap_or_default()
}

/// Turns an impl block into a flow.
#[proc_macro_attribute]
pub fn flow(_attr: TokenStream, _item: TokenStream) -> TokenStream {
    pending("flow")
}

/// Marks a start method.
#[proc_macro_attribute]
pub fn start(_attr: TokenStream, _item: TokenStream) -> TokenStream {
    pending("start")
}

/// Marks a listener.
#[proc_macro_attribute]
pub fn listen(_attr: TokenStream, _item: TokenStream) -> TokenStream {
    pending("listen")
}

/// Marks a router.
#[proc_macro_attribute]
pub fn router(_attr: TokenStream, _item: TokenStream) -> TokenStream {
    pending("router")
}

/// Marks a compensation method.
#[proc_macro_attribute]
pub fn compensate(_attr: TokenStream, _item: TokenStream) -> TokenStream {
    pending("compensate")
}
