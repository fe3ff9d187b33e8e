//! `#[derive(Route)]`: the variants of a route enum, for `#[flow]`'s check that each router's
//! routes are handled. Parsing (`parse`) and code generation (`expand`) are separate; the only
//! checks are the shape of the item, done while parsing.

mod expand;
mod parse;

use proc_macro2::TokenStream;

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    match parse::RouteEnum::parse(input) {
        Ok(route) => expand::expand(&route),
        Err(err) => err.to_compile_error(),
    }
}
