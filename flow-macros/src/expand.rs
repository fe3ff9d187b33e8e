//! Code generation: the user's impl block (stripped of our attributes), then inside
//! `const _: () = { ... }` the `Flow` impl with the static graph and the dispatcher, the type
//! checks rustc performs for us (spanned on the user's tokens) and the registration, and beside
//! it the const checks of the routers' routes.
//!
//! Generated code names only `::flow_core::__private` items and the items rustc names in its
//! messages on a missing bound (`::flow_core::StateCheck`, `SaveOutput`, `LoadOutput`,
//! `IntoFlowError`, `assert_output`), by absolute path.

use proc_macro2::{Literal, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{Flow, Method};
use crate::attr::{Backoff, LabelPath, Retry, Terminal, path_text, type_text};
use crate::check::{Graph, Resolved};
use crate::duration::Dur;

fn private() -> TokenStream {
    quote!(::flow_core::__private)
}

/// The successful expansion.
pub(crate) fn expand(g: &Graph<'_>) -> TokenStream {
    let p = private();
    let flow = g.flow;
    let item = &flow.item;
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let Some(state) = &flow.state else {
        // Unreachable: a missing state is an error, and errors never reach expansion.
        return fallback(flow, TokenStream::new());
    };

    let name = &flow.name;
    let type_name = type_text(&self_ty.to_token_stream());
    let state_name = type_text(&state.to_token_stream());
    let methods = flow.methods.iter().enumerate().map(|(i, m)| method_def(g, i, m));
    let labels = g.labels.iter().map(|l| {
        let route_type = path_text(&l.enum_path);
        let variant = l.variant.to_string();
        quote!(#p::LabelDef { route_type: #route_type, variant: #variant })
    });
    let max_calls = Literal::u32_unsuffixed(flow.max_calls);
    let retry = retry_tokens(flow.retry.as_ref());
    let timeout = duration_opt(flow.timeout.as_ref());
    let on_failure = if flow.finish_running { quote!(FinishRunning) } else { quote!(CancelRunning) };
    let park_after = duration_opt(flow.park_after.as_ref());
    let arms = flow.methods.iter().enumerate().map(|(i, m)| invoke_arm(g, i, m));
    let checks = checks(g);
    let method_refs = method_refs(g);
    let route_checks = flow.methods.iter().enumerate().map(|(i, m)| route_check(g, i, m));
    // Spanned on the user's state type, braces included: the state reaches the impl through
    // `StateCheck`, so a state without a serde derive is reported there once per derive, in
    // flow_core's words; every item of the impl normalizes `Self::State`, and an item spanned
    // on the attribute would report the same missing derive a second time. The methods'
    // futures capture a context of the state type itself, not of the projection.
    let flow_impl = quote_spanned! {state.span()=>
        impl #impl_generics ::flow_core::__private::Flow for #self_ty #where_clause {
            type State = <#state as ::flow_core::StateCheck>::Checked;

            fn graph() -> &'static ::flow_core::__private::Graph {
                static GRAPH: ::flow_core::__private::Graph = ::flow_core::__private::Graph {
                    name: #name,
                    type_name: #type_name,
                    state_type: #state_name,
                    methods: &[#(#methods),*],
                    labels: &[#(#labels),*],
                    options: ::flow_core::__private::FlowOptions {
                        max_calls: #max_calls,
                        retry: #retry,
                        timeout: #timeout,
                        on_failure: ::flow_core::__private::OnFailure::#on_failure,
                        park_after: #park_after,
                    },
                };
                &GRAPH
            }

            // Terminal arms may overlap listened-to variants (terminal wins), and a bare
            // `terminal` may follow arms that already cover every variant.
            // A method without a context or an input leaves `cx` or `payload` unused.
            #[allow(unreachable_patterns, unused_variables)]
            fn __invoke(
                self: ::flow_core::__private::Arc<Self>,
                method: ::flow_core::__private::MethodId,
                cx: ::flow_core::__private::Ctx<Self::State>,
                payload: ::flow_core::__private::Payload,
            ) -> ::flow_core::__private::BoxFuture<'static, ::flow_core::__private::StepResult> {
                let cx: ::flow_core::__private::Ctx<#state> = cx;
                match method.0 {
                    #(#arms)*
                    _ => ::flow_core::__private::Box::pin(async move {
                        ::flow_core::__private::unknown_method(method)
                    }),
                }
            }
        }
    };
    let registration = if flow.is_generic() {
        // A generic flow has no single type to register under its name.
        TokenStream::new()
    } else {
        quote! {
            #p::inventory::submit! {
                #p::FlowRegistration {
                    name: #name,
                    type_name: #type_name,
                    graph: <#self_ty as #p::Flow>::graph,
                }
            }
        }
    };

    quote! {
        #item

        const _: () = {
            #flow_impl

            #checks

            #method_refs

            #registration
        };

        // Beside the wrapper rather than in it, so that rustc names a failing check `_`, not `_::_`.
        #(#route_checks)*
    }
}

/// The user's impl, stripped, the errors, and a stub `Flow` impl with an empty graph: code that
/// uses the flow (`MyFlow::graph()`, `kickoff`) still type-checks, so only the real errors show
/// (thiserror's fallback). The methods are never called then, so dead-code warnings are silenced.
pub(crate) fn fallback(flow: &Flow, errors: TokenStream) -> TokenStream {
    let item = &flow.item;
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    // Without a state type, `()` (which is a valid state) keeps the stub well-formed.
    let state = flow.state.as_ref().map_or_else(|| quote!(()), ToTokens::to_token_stream);
    let name = &flow.name;
    let type_name = type_text(&self_ty.to_token_stream());
    let stub = if item.trait_.is_some() {
        TokenStream::new()
    } else {
        // Spanned on the state type, braces included, as in `expand`: a state without a serde
        // derive is reported once per derive, there.
        quote_spanned! {state.span()=>
            const _: () = {
                impl #impl_generics ::flow_core::__private::Flow for #self_ty #where_clause {
                    type State = <#state as ::flow_core::StateCheck>::Checked;

                    fn graph() -> &'static ::flow_core::__private::Graph {
                        static GRAPH: ::flow_core::__private::Graph = ::flow_core::__private::Graph {
                            name: #name,
                            type_name: #type_name,
                            state_type: "",
                            methods: &[],
                            labels: &[],
                            options: ::flow_core::__private::FlowOptions::DEFAULT,
                        };
                        &GRAPH
                    }

                    fn __invoke(
                        self: ::flow_core::__private::Arc<Self>,
                        method: ::flow_core::__private::MethodId,
                        _cx: ::flow_core::__private::Ctx<Self::State>,
                        _payload: ::flow_core::__private::Payload,
                    ) -> ::flow_core::__private::BoxFuture<'static, ::flow_core::__private::StepResult> {
                        ::flow_core::__private::Box::pin(async move { ::flow_core::__private::unknown_method(method) })
                    }
                }
            };
        }
    };
    quote! {
        #[allow(dead_code)]
        #item
        #errors
        #stub
    }
}

fn id(i: usize) -> Literal {
    Literal::usize_unsuffixed(i)
}

fn method_def(g: &Graph<'_>, i: usize, m: &Method) -> TokenStream {
    let p = private();
    let name = m.ident.to_string();
    let is_start = m.is_start;
    let start_listens = m.start_listens;
    let is_router = m.is_router;
    let trigger = match &g.triggers[i] {
        Some(t) => {
            let t = trigger_tokens(t);
            quote!(#p::Some(#t))
        }
        None => quote!(#p::None),
    };
    let output_type = m.sig.output.as_ref().map(|t| type_text(&t.to_token_stream())).unwrap_or_default();
    let payload_type = match &m.sig.payload {
        Some(t) => {
            let t = type_text(&t.to_token_stream());
            quote!(#p::Some(#t))
        }
        None => quote!(#p::None),
    };
    let routes = g.routes[i].iter().map(|&l| {
        let l = id(l);
        quote!(#p::LabelId(#l))
    });
    let retry = retry_tokens(m.options.retry.as_ref());
    let timeout = duration_opt(m.options.timeout.as_ref());
    let non_critical = m.options.non_critical;
    let compensates = match g.compensates[i] {
        Some(t) => {
            let t = id(t);
            quote!(#p::Some(#p::MethodId(#t)))
        }
        None => quote!(#p::None),
    };
    let mut ends = Vec::new();
    match &m.options.terminal {
        Some(Terminal::Variants(vs)) => {
            for v in vs {
                let v = v.variant.to_string();
                ends.push(quote!(#p::RouteEnd::Variant(#v)));
            }
        }
        Some(Terminal::All) => ends.push(quote!(#p::RouteEnd::Unhandled)),
        None => {}
    }
    if m.sig.route.as_ref().is_some_and(|r| r.optional) {
        ends.push(quote!(#p::RouteEnd::None));
    }
    let blocking = m.sig.blocking;
    quote! {
        #p::MethodDef {
            name: #name,
            is_start: #is_start,
            start_listens: #start_listens,
            is_router: #is_router,
            trigger: #trigger,
            output_type: #output_type,
            payload_type: #payload_type,
            routes: &[#(#routes),*],
            policy: #p::MethodPolicy { retry: #retry, timeout: #timeout, non_critical: #non_critical },
            compensates: #compensates,
            ends: &[#(#ends),*],
            blocking: #blocking,
        }
    }
}

fn trigger_tokens(t: &Resolved) -> TokenStream {
    let p = private();
    match t {
        Resolved::Method(m) => {
            let m = id(*m);
            quote!(#p::Trigger::Method(#p::MethodId(#m)))
        }
        Resolved::Label(l) => {
            let l = id(*l);
            quote!(#p::Trigger::Label(#p::LabelId(#l)))
        }
        Resolved::Or(parts) => {
            let parts = parts.iter().map(trigger_tokens);
            quote!(#p::Trigger::Or(&[#(#parts),*]))
        }
        Resolved::And(parts) => {
            let parts = parts.iter().map(trigger_tokens);
            quote!(#p::Trigger::And(&[#(#parts),*]))
        }
    }
}

fn duration(d: &Dur) -> TokenStream {
    let p = private();
    if d.is_unlimited() {
        return quote!(#p::Duration::MAX);
    }
    let ms = Literal::u64_unsuffixed(d.millis);
    quote!(#p::Duration::from_millis(#ms))
}

fn millis(ms: u64) -> TokenStream {
    let p = private();
    let ms = Literal::u64_unsuffixed(ms);
    quote!(#p::Duration::from_millis(#ms))
}

fn duration_opt(d: Option<&Dur>) -> TokenStream {
    let p = private();
    match d {
        Some(d) => {
            let d = duration(d);
            quote!(#p::Some(#d))
        }
        None => quote!(#p::None),
    }
}

fn retry_tokens(r: Option<&Retry>) -> TokenStream {
    let p = private();
    let Some(r) = r else { return quote!(#p::None) };
    let attempts = Literal::u32_unsuffixed(r.attempts);
    let invalid = Literal::u32_unsuffixed(r.invalid_reply);
    let jitter = r.jitter;
    let backoff = match r.backoff {
        Backoff::Fixed(ms) => {
            let d = millis(ms);
            quote!(#p::Backoff::Fixed(#d))
        }
        Backoff::Exponential { initial, max } => {
            let (initial, max) = (millis(initial), millis(max));
            quote!(#p::Backoff::Exponential { initial: #initial, max: #max })
        }
    };
    quote! {
        #p::Some(#p::RetryPolicy {
            attempts: #attempts,
            backoff: #backoff,
            jitter: #jitter,
            invalid_reply_attempts: #invalid,
        })
    }
}

/// One constant per method with an output, its name in upper case (`Self::FETCH_A` for
/// `fetch_a`), naming the method and its output type for `cx.output(...)`: the compiler then
/// checks the type read against the type the method returns.
fn method_refs(g: &Graph<'_>) -> TokenStream {
    let p = private();
    let item = &g.flow.item;
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let flow_name = &g.flow.name;
    let consts = g.flow.methods.iter().enumerate().filter(|(_, m)| !m.is_compensate).filter_map(|(i, m)| {
        let out = m.sig.output.as_ref()?;
        let name = syn::ext::IdentExt::unraw(&m.ident).to_string();
        let konst = format_ident!("{}", name.to_uppercase(), span = m.ident.span());
        let vis = &m.vis;
        let doc = format!("The method `{name}` and its output type, for `cx.output(...)`.");
        let id = Literal::u16_unsuffixed(u16::try_from(i).unwrap_or(u16::MAX));
        Some(quote! {
            #[doc = #doc]
            #vis const #konst: #p::MethodRef<#out> = #p::MethodRef::new(#flow_name, #name, #id);
        })
    });
    quote! {
        #[allow(dead_code)]
        impl #impl_generics #self_ty #where_clause {
            #(#consts)*
        }
    }
}

/// One arm of the dispatcher: decode the payload, call the method, turn its result into a step
/// result (with the route's label for routers).
fn invoke_arm(g: &Graph<'_>, i: usize, m: &Method) -> TokenStream {
    let p = private();
    let ident = &m.ident;
    let name = ident.to_string();
    let mut args = vec![quote!(&*self)];
    if let Some(cx_ty) = &m.sig.cx {
        // A context of another state type is reported by rustc on the user's state argument.
        args.push(quote_spanned!(ctx_state_span(cx_ty)=> &cx));
    }
    let decode = match &m.sig.payload {
        Some(ty) => {
            args.push(quote!(__p));
            quote!(let __p: #ty = #p::payload(&payload, #name)?;)
        }
        None => TokenStream::new(),
    };
    let call = if m.sig.blocking {
        // Moved to the blocking pool with what it borrows: the flow's `Arc`, the context and
        // the decoded input. The run's own task stays free, so its timer can end the step.
        quote!(#p::blocking(move || Self::#ident(#(#args),*)).await?)
    } else {
        quote!(Self::#ident(#(#args),*).await)
    };
    // The output and error types are passed explicitly (from the user's own tokens), so that an
    // output that does not persist or an error that does not convert into `flow_core::Error` is
    // reported on the user's type. The checks sit in the same body as the call, where rustc
    // reports a bound that fails twice at one span only once.
    let (assert, types) = match &m.sig.output {
        Some(out) => {
            let err = m.sig.error.as_ref().map_or_else(|| quote!(_), ToTokens::to_token_stream);
            // Qualified calls: rustc reports a missing bound on the user's type with no "required
            // by a bound" note pointing into flow_core's source.
            let err_check = m.sig.error.as_ref().map(|e| quote!(<#e as ::flow_core::IntoFlowError>::check();));
            let checks = quote! {
                <#out as ::flow_core::SaveOutput>::check();
                <#out as ::flow_core::LoadOutput>::check();
                ::flow_core::assert_output::<#out>();
                #err_check
            };
            (checks, quote!(::<#out, #err>))
        }
        None => (TokenStream::new(), TokenStream::new()),
    };
    let body = match &m.sig.route {
        Some(_) => {
            let label_match = route_match(g, i, m);
            quote!(#p::route #types (#call, |__r| #label_match))
        }
        None => quote!(#p::output #types (#call)),
    };
    let i = id(i);
    quote! {
        #i => #p::Box::pin(async move {
            #assert
            #decode
            #body
        }),
    }
}

/// The span of `S` in a context parameter `&Ctx<S>`, else of the whole type.
fn ctx_state_span(ty: &syn::Type) -> proc_macro2::Span {
    if let syn::Type::Reference(r) = ty
        && let syn::Type::Path(p) = &*r.elem
        && let Some(last) = p.path.segments.last()
        && let syn::PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(arg) = args.args.first()
    {
        return arg.span();
    }
    ty.span()
}

/// `match __r { Route::A { .. } => Some(LabelId(0)), ... }` for a router. The scrutinee is
/// spanned on the route type, so a variant that no listener handles and that is not declared
/// terminal is reported there by rustc as a non-exhaustive match; each pattern keeps the span
/// of the user's `Route::Variant`, so a variant that does not exist is reported there.
fn route_match(g: &Graph<'_>, i: usize, m: &Method) -> TokenStream {
    let p = private();
    let Some(route) = &m.sig.route else { return TokenStream::new() };
    let wrap = |pattern: TokenStream| if route.optional { quote!(#p::Some(#pattern)) } else { pattern };
    let mut arms = Vec::new();
    if route.optional {
        arms.push(quote!(#p::None => #p::None,));
    }
    let pattern = |label: &LabelPath| {
        let path = &label.path;
        wrap(quote!(#path { .. }))
    };
    if let Some(Terminal::Variants(vs)) = &m.options.terminal {
        for v in vs {
            let pat = pattern(v);
            arms.push(quote!(#pat => #p::None,));
        }
    }
    for &l in &g.routes[i] {
        let pat = pattern(&g.labels[l]);
        let l = id(l);
        arms.push(quote!(#pat => #p::Some(#p::LabelId(#l)),));
    }
    if let Some(Terminal::All) = &m.options.terminal {
        arms.push(quote!(_ => #p::None,));
    } else if !g.flow.names_own_generics(&route.inner) {
        // `route_check` has made sure, while the crate compiled, that the arms above cover
        // every variant: this arm only keeps rustc from reporting the same gap a second time.
        arms.push(quote!(_ => #p::None,));
    } else {
        // rustc reports the gap here. It suggests a placeholder arm after the last arm when the
        // last two arms share their syntax context, which would land in the user's attribute;
        // a last arm from another context (and a guard, so it covers nothing) prevents that.
        arms.push(quote_spanned!(proc_macro2::Span::mixed_site()=> _ if false => #p::None,));
    }
    // Matched by place (`*__r`): rustc then names an unhandled variant as the user wrote it,
    // `Ticket::Spam`, not `&Ticket::Spam`.
    let scrutinee = quote_spanned!(route.ty.span()=> *__r);
    quote!(match #scrutinee { #(#arms)* })
}

/// The check that every variant of a router's route enum is handled by a listener or declared
/// terminal, evaluated by rustc while the user's crate compiles (the macro cannot see the
/// enum's variants; `#[derive(Route)]` lists them). A gap is a const panic whose text names the
/// variants, the router and both fixes, spanned on the router's return type. The route type
/// must implement `Route`, so a struct returned by a router is refused there too, in the words
/// of `Route`'s `on_unimplemented`. Listeners that listen to a router by its name while none of
/// its routes is handled are reported instead, each on its own name, with the variants it can
/// listen to. A generic flow is checked the same way unless its route type names the impl's
/// parameters, which a const item beside the impl cannot: there rustc's exhaustiveness check on
/// the route match stands in (a const evaluated per instance would only fail where the flow is
/// instantiated, and not at all in a library that never does).
fn route_check(g: &Graph<'_>, i: usize, m: &Method) -> TokenStream {
    let p = private();
    let Some(route) = &m.sig.route else { return TokenStream::new() };
    if g.flow.names_own_generics(&route.inner) {
        return TokenStream::new();
    }
    let inner = &route.inner;
    let span = inner.span();
    if let Some(Terminal::All) = &m.options.terminal {
        return quote_spanned! {span=>
            const _: &[&str] = <#inner as ::flow_core::Route>::VARIANTS;
        };
    }
    let enum_name = &route.enum_name;
    let router = syn::ext::IdentExt::unraw(&m.ident).to_string();
    if !g.by_name[i].is_empty() {
        // The variants are read on the route type (a type that is not a route is reported
        // there, once); the panic is on the listener's name.
        let listeners = g.by_name[i].iter().map(|&l| {
            let listener = &g.flow.methods[l];
            let name = syn::ext::IdentExt::unraw(&listener.ident).to_string();
            let trigger = listener.trigger.as_ref().map(crate::attr::TriggerExpr::text).unwrap_or_default();
            let variants = quote_spanned!(span=> <#inner as ::flow_core::Route>::VARIANTS);
            let panic = quote_spanned! {listener.ident.span()=>
                match text.as_str() {
                    #p::Some(message) => ::core::panic!("{}", message),
                    #p::None => ::core::panic!("a listener listens to a router by its name"),
                }
            };
            quote! {
                const _: () = {
                    let text = #p::listened_by_name(#name, #router, #trigger, #enum_name, #variants);
                    #panic
                };
            }
        });
        return quote!(#(#listeners)*);
    }
    let mut handled: Vec<String> = g.routes[i].iter().map(|&l| g.labels[l].variant.to_string()).collect();
    if let Some(Terminal::Variants(vs)) = &m.options.terminal {
        handled.extend(vs.iter().map(|v| v.variant.to_string()));
    }
    // The message is built by a `const fn` of flow_core; only the panic is generated here,
    // spanned on the route type, so rustc points at the user's token and at nothing of ours.
    quote_spanned! {span=>
        const _: () = {
            if let #p::Some(text) = #p::unhandled_routes(
                #enum_name,
                #router,
                <#inner as ::flow_core::Route>::VARIANTS,
                &[#(#handled),*],
            ) {
                match text.as_str() {
                    #p::Some(message) => ::core::panic!("{}", message),
                    #p::None => ::core::panic!("a route of this router is not handled by any listener"),
                }
            }
        };
    }
}

/// Checks rustc performs for us, spanned on the user's tokens: payload parameters have the
/// type their trigger sends. The function is never called, nor are
/// its closures. (The state's bounds are checked by `type State = #state` itself, on the user's
/// token; a separate `assert_state` would report each missing trait a second time.)
fn checks(g: &Graph<'_>) -> TokenStream {
    let flow = g.flow;
    let item = &flow.item;
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let mut body = Vec::new();
    let mut traits = Vec::new();
    for c in &g.payload_checks {
        let param = &c.param;
        let sources = &c.sources;
        // One marker trait per check, implemented only by `X` for `(X, X, ...)` (one `X` per
        // source), so that rustc's message can say which method receives what.
        // Named after the method (`InputOfLog`), as rustc names the trait in a help line.
        let camel: String = syn::ext::IdentExt::unraw(&c.method)
            .to_string()
            .split('_')
            .map(|w| {
                let mut chars = w.chars();
                chars.next().map(|f| f.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
            })
            .collect();
        let same = match c.part {
            Some(n) => format_ident!("InputOf{}Part{}", camel, n, span = c.method.span()),
            None => format_ident!("InputOf{}", camel, span = c.method.span()),
        };
        let message = &c.message;
        let label = &c.label;
        // One source: `T` for `T`; several (an `or`): `X` for `(X, X, ...)`.
        let (impl_same, source) = match sources.as_slice() {
            [one] => (quote!(impl<T> #same<T> for T {}), quote!(#one)),
            _ => {
                let xs = sources.iter().map(|_| quote!(X));
                (quote!(impl<X> #same<(#(#xs,)*)> for X {}), quote!((#(#sources,)*)))
            }
        };
        traits.push(quote! {
            #[diagnostic::on_unimplemented(
                message = #message,
                label = #label,
                note = "an input parameter has the type its trigger sends: a method's output, the route enum \
                        for a route, the undone method's output for `#[compensate]`; change the type, or remove \
                        the parameter"
            )]
            trait #same<T> {
                fn check() {}
            }
            #impl_same
        });
        // A qualified call rather than a bounded function: rustc then reports the trait alone,
        // with no "required by a bound in" note naming generated items.
        let call = quote_spanned!(param.span()=> <#param as #same<#source>>::check());
        body.push(quote!(#call;));
    }
    quote! {
        #(#traits)*

        impl #impl_generics #self_ty #where_clause {
            #[doc(hidden)]
            #[allow(dead_code, clippy::all, clippy::pedantic)]
            fn __flow_checks() {
                #(#body)*
            }
        }
    }
}
