//! Reads the enum a `#[derive(Route)]` is on.

use proc_macro2::TokenStream;
use syn::{Data, DeriveInput, Generics, Ident};

/// A route enum: its name, generics and variant names.
pub(super) struct RouteEnum {
    pub(super) ident: Ident,
    pub(super) generics: Generics,
    pub(super) variants: Vec<Ident>,
}

impl RouteEnum {
    pub(super) fn parse(input: TokenStream) -> syn::Result<RouteEnum> {
        let input: DeriveInput = syn::parse2(input)?;
        let variants = match &input.data {
            Data::Enum(data) => data.variants.iter().map(|v| v.ident.clone()).collect::<Vec<_>>(),
            Data::Struct(data) => {
                return Err(syn::Error::new(
                    data.struct_token.span,
                    format!(
                        "a route is an enum of the outcomes a router picks between, and `{}` is a struct: write \
                         `enum {} {{ .. }}` with one variant per route, or return the struct from an ordinary \
                         `#[listen]` method",
                        input.ident, input.ident
                    ),
                ));
            }
            Data::Union(data) => {
                return Err(syn::Error::new(
                    data.union_token.span,
                    "a route is an enum of the outcomes a router picks between: write `enum Name { .. }` with one \
                     variant per route",
                ));
            }
        };
        if variants.is_empty() {
            return Err(syn::Error::new(
                input.ident.span(),
                format!(
                    "`{}` has no variants, so a router returning it could never return: give it one variant per \
                     route",
                    input.ident
                ),
            ));
        }
        Ok(RouteEnum { ident: input.ident, generics: input.generics, variants })
    }
}
