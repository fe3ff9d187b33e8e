//! The `Route` impl of a route enum.

use proc_macro2::TokenStream;
use quote::quote;

use super::parse::RouteEnum;

pub(super) fn expand(route: &RouteEnum) -> TokenStream {
    let ident = &route.ident;
    let (impl_generics, ty_generics, where_clause) = route.generics.split_for_impl();
    let names = route.variants.iter().map(|v| syn::ext::IdentExt::unraw(v).to_string());
    let arms = route.variants.iter().map(|v| {
        let name = syn::ext::IdentExt::unraw(v).to_string();
        quote!(Self::#v { .. } => #name,)
    });
    quote! {
        impl #impl_generics ::flow_core::Route for #ident #ty_generics #where_clause {
            const VARIANTS: &'static [&'static str] = &[#(#names),*];

            fn variant(&self) -> &'static str {
                match self {
                    #(#arms)*
                }
            }
        }
    }
}
