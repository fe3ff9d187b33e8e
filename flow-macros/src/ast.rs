//! The front end: reads a `#[flow]` impl block into a model of the flow, removing our helper
//! attributes from the methods as it goes. Problems are reported to the [`Ctxt`]; the model is
//! filled in as far as it can be so that the later checks still find the other errors.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{FnArg, GenericArgument, Ident, ImplItem, ItemImpl, Path, PathArguments, ReturnType, Type};

use crate::attr::{self, AttrKind, MethodAttr, MethodOptions, Retry, TriggerExpr};
use crate::ctxt::Ctxt;
use crate::duration::Dur;

/// A `#[flow]` impl block, read.
pub(crate) struct Flow {
    /// The impl block with our attributes removed: emitted as the user wrote it otherwise.
    pub(crate) item: ItemImpl,
    pub(crate) state: Option<Type>,
    /// The registered name: `name = "..."`, else the self type's name.
    pub(crate) name: String,
    pub(crate) max_calls: u32,
    pub(crate) retry: Option<Retry>,
    pub(crate) timeout: Option<Dur>,
    /// `on_failure = "finish_running"`.
    pub(crate) finish_running: bool,
    /// `park_after = "30s"`.
    pub(crate) park_after: Option<Dur>,
    /// The annotated methods, in declaration order: their index is their `MethodId`.
    pub(crate) methods: Vec<Method>,
    /// Methods of the impl without our attributes: not part of the graph.
    pub(crate) plain_fns: Vec<Ident>,
}

/// One annotated method.
pub(crate) struct Method {
    pub(crate) ident: Ident,
    /// The method's visibility, which the constant naming it for `cx.output` gets too.
    pub(crate) vis: syn::Visibility,
    pub(crate) is_start: bool,
    /// `#[start] #[listen(trigger)]`: runs at kickoff and again each time its trigger fires.
    pub(crate) start_listens: bool,
    pub(crate) is_router: bool,
    pub(crate) trigger: Option<TriggerExpr>,
    /// `#[compensate(target)]`.
    pub(crate) compensates: Option<Ident>,
    pub(crate) is_compensate: bool,
    pub(crate) options: MethodOptions,
    pub(crate) sig: Sig,
}

/// What the signature says, as far as it could be read.
#[derive(Default)]
pub(crate) struct Sig {
    /// The context parameter's type as written (`&Ctx<S>`).
    pub(crate) cx: Option<Type>,
    /// The payload parameter's type.
    pub(crate) payload: Option<Type>,
    /// `T` of `Result<T>`.
    pub(crate) output: Option<Type>,
    /// `E` of `Result<T, E>`, when written.
    pub(crate) error: Option<Type>,
    /// For routers: the route enum.
    pub(crate) route: Option<Route>,
    /// A plain `fn` rather than an `async fn`: blocking work, run on the blocking thread pool.
    pub(crate) blocking: bool,
}

/// The route a router returns: `Result<Route>` or `Result<Option<Route>>`.
pub(crate) struct Route {
    /// `Route` or `Option<Route>`, as written.
    pub(crate) ty: Type,
    /// The enum itself: `Route` also when `Option<Route>` is written.
    pub(crate) inner: Type,
    pub(crate) optional: bool,
    /// The enum's name (the last segment of its path), by which labels find their router.
    pub(crate) enum_name: String,
}

impl Flow {
    /// Reads the impl block. Always returns the model, stripped, even when errors were reported.
    pub(crate) fn from_impl(cx: &Ctxt, args: TokenStream, mut item: ItemImpl) -> Flow {
        let flow_args = attr::flow_args(cx, args);
        if let Some((path, _)) = &item.trait_ {
            cx.error_spanned_by(
                path,
                "#[flow] goes on an inherent impl block, `#[flow(state = MyState)] impl MyFlow { ... }`, \
                 not on a trait impl",
            );
        }
        let name = match &flow_args.name {
            Some(lit) => lit.value(),
            None => self_type_name(&item.self_ty),
        };
        let mut methods = Vec::new();
        let mut plain_fns = Vec::new();
        let mut names: Vec<Ident> = Vec::new();
        let mut duplicates = Vec::new();
        for (index, impl_item) in item.items.iter_mut().enumerate() {
            let ImplItem::Fn(f) = impl_item else {
                strip_misplaced(cx, impl_item);
                continue;
            };
            if let Some(first) = names.iter().find(|n| **n == f.sig.ident) {
                // Reported here, before any check of the graph: with two methods of one name,
                // every trigger naming it is ambiguous. The second one is dropped from the
                // output so that rustc does not report it again in its own words.
                cx.error_spanned_by(
                    &f.sig.ident,
                    format!(
                        "a second method named `{first}`: each method of a flow is a step with its own name, \
                         by which triggers refer to it; rename one of them"
                    ),
                );
                duplicates.push(index);
                continue;
            }
            names.push(f.sig.ident.clone());
            let mut ours = Vec::new();
            f.attrs.retain(|a| match AttrKind::from_path(a.path()) {
                Some(kind) => {
                    ours.push(attr::method_attr(cx, kind, a));
                    false
                }
                None => true,
            });
            if ours.is_empty() {
                plain_fns.push(f.sig.ident.clone());
                continue;
            }
            // An async flow method stays async even when it awaits nothing (a plain `fn` means
            // blocking work); clippy's pedantic `unused_async` would ask for the opposite.
            if f.sig.asyncness.is_some() {
                f.attrs.push(syn::parse_quote!(#[allow(clippy::unused_async)]));
            }
            let mut m = method(cx, ours, &f.sig);
            m.vis = f.vis.clone();
            methods.push(m);
        }
        for index in duplicates.into_iter().rev() {
            item.items.remove(index);
        }
        Flow {
            item,
            state: flow_args.state,
            name,
            max_calls: flow_args.max_calls.unwrap_or(100),
            retry: flow_args.retry,
            timeout: flow_args.timeout,
            finish_running: flow_args.finish_running,
            park_after: flow_args.park_after,
            methods,
            plain_fns,
        }
    }

    /// Whether the impl has generic parameters (such a flow is not registered by name: there
    /// is no single type to register).
    pub(crate) fn is_generic(&self) -> bool {
        !self.item.generics.params.is_empty()
    }

    /// Whether `ty` may name a parameter of the impl (or `Self`): such a type has no meaning in
    /// a const item beside the impl, so the checks that need one are left to rustc there.
    pub(crate) fn names_own_generics(&self, ty: &Type) -> bool {
        fn mentions(tokens: proc_macro2::TokenStream, names: &[String]) -> bool {
            tokens.into_iter().any(|t| match t {
                proc_macro2::TokenTree::Ident(i) => i == "Self" || names.iter().any(|n| i == n),
                proc_macro2::TokenTree::Group(g) => mentions(g.stream(), names),
                _ => false,
            })
        }
        let names: Vec<String> = self
            .item
            .generics
            .params
            .iter()
            .map(|p| match p {
                syn::GenericParam::Type(t) => t.ident.to_string(),
                syn::GenericParam::Lifetime(l) => l.lifetime.ident.to_string(),
                syn::GenericParam::Const(c) => c.ident.to_string(),
            })
            .collect();
        mentions(ty.to_token_stream(), &names)
    }

    pub(crate) fn method_index(&self, name: &Ident) -> Option<usize> {
        self.methods.iter().position(|m| m.ident == *name)
    }
}

/// The name of the self type: the last segment of its path (`ContentFlow` for
/// `crate::flows::ContentFlow<T>`).
fn self_type_name(ty: &Type) -> String {
    match ty {
        Type::Path(p) => p.path.segments.last().map_or_else(String::new, |s| s.ident.to_string()),
        Type::Group(g) => self_type_name(&g.elem),
        other => attr::type_text(&other.to_token_stream()),
    }
}

/// Our attributes on something that is not a method: reported, and removed so that the
/// standalone attribute does not report it a second time.
fn strip_misplaced(cx: &Ctxt, item: &mut ImplItem) {
    let attrs = match item {
        ImplItem::Const(c) => &mut c.attrs,
        ImplItem::Type(t) => &mut t.attrs,
        ImplItem::Macro(m) => &mut m.attrs,
        _ => return,
    };
    attrs.retain(|a| match AttrKind::from_path(a.path()) {
        Some(kind) => {
            cx.error_spanned_by(
                a,
                format!("`#[{}]` goes on an `async fn` (or a blocking `fn`) of the flow", kind.name()),
            );
            false
        }
        None => true,
    });
}

/// Combines a method's attributes into its role, and reads its signature.
fn method(cx: &Ctxt, attrs: Vec<MethodAttr>, sig: &syn::Signature) -> Method {
    let mut seen: Vec<AttrKind> = Vec::new();
    let mut kept: Vec<MethodAttr> = Vec::new();
    for a in attrs {
        let name = a.kind.name();
        if seen.contains(&a.kind) {
            let hint = match a.kind {
                AttrKind::Compensate => "a method undoes one method",
                _ => "a method has one trigger; combine triggers with `or(a, b)` or `and(a, b)`",
            };
            cx.error_spanned_by(&a.attr, format!("duplicate `#[{name}]`: {hint}"));
            continue;
        }
        seen.push(a.kind);
        kept.push(a);
    }
    let find = |k: AttrKind| kept.iter().find(|a| a.kind == k);
    let (start, listen, router, compensate) =
        (find(AttrKind::Start), find(AttrKind::Listen), find(AttrKind::Router), find(AttrKind::Compensate));

    if let Some(c) = compensate {
        for other in kept.iter().filter(|a| a.kind != AttrKind::Compensate) {
            cx.error_spanned_by(
                &other.attr,
                format!(
                    "a `#[compensate(...)]` method runs only to undo `{}` when the run fails; it cannot also be \
                     `#[{}]`",
                    c.target.as_ref().map_or_else(|| "its method".to_owned(), Ident::to_string),
                    other.kind.name()
                ),
            );
        }
    }
    if let (Some(s), Some(l)) = (start, listen)
        && s.trigger_written
    {
        cx.error_spanned_by(
            &l.attr,
            "a start has one trigger: `#[start(trigger)]` runs only when its trigger fires, `#[start] \
             #[listen(trigger)]` runs at kickoff and again each time its trigger fires; remove one of them",
        );
    }
    if let (Some(_), Some(l)) = (router, listen) {
        cx.error_spanned_by(
            &l.attr,
            "a router names its trigger itself: write `#[router(trigger)]` without `#[listen]`",
        );
    }
    if let (Some(_), Some(r)) = (start, router)
        && r.trigger_written
    {
        cx.error_spanned_by(
            &r.attr,
            "a start that is also a router takes its trigger on `#[start(...)]`: write `#[start(trigger)] #[router]`",
        );
    }
    if let (None, Some(r)) = (start, router)
        && !r.trigger_written
    {
        cx.error_spanned_by(
            &r.attr,
            "`#[router]` needs a trigger, `#[router(method)]`; a router without one must also be `#[start]`",
        );
    }
    if let Some(l) = listen
        && !l.trigger_written
    {
        cx.error_spanned_by(
            &l.attr,
            "`#[listen]` needs a trigger: `#[listen(method)]`, `#[listen(Route::Variant)]`, `#[listen(or(a, b))]` \
             or `#[listen(and(a, b))]`",
        );
    }

    // Options may be split over `#[start] #[router(...)]`; a repeated one is a mistake.
    let mut options = MethodOptions::default();
    let mut given: Vec<String> = Vec::new();
    for a in &kept {
        for (key, path) in &a.option_args {
            if given.contains(key) {
                cx.error_spanned_by(path, format!("duplicate option `{key}`: give it once"));
            }
            given.push(key.clone());
        }
        let o = &a.options;
        options.retry = options.retry.take().or_else(|| o.retry.clone());
        options.timeout = options.timeout.take().or_else(|| o.timeout.clone());
        options.non_critical |= o.non_critical;
        options.terminal = options.terminal.take().or_else(|| o.terminal.clone());
    }

    let is_compensate = compensate.is_some();
    let is_router = router.is_some() && !is_compensate;
    let trigger = if is_compensate {
        None
    } else {
        [start, listen, router].into_iter().flatten().find_map(|a| a.trigger.clone())
    };
    Method {
        ident: sig.ident.clone(),
        vis: syn::Visibility::Inherited,
        is_start: start.is_some() && !is_compensate,
        start_listens: start.is_some_and(|s| !s.trigger_written) && listen.is_some() && !is_compensate,
        is_router,
        trigger,
        compensates: compensate.and_then(|c| c.target.clone()),
        is_compensate,
        options,
        sig: signature(cx, sig, is_router),
    }
}

const SHAPE: &str = "a flow method looks like `async fn name(&self, cx: &Ctx<State>, input: T) -> Result<U>` \
                     (the context and the input parameter are optional)";

/// Reads `async fn name(&self [, cx: &Ctx<S>] [, payload: T]) -> Result<U>`.
fn signature(cx: &Ctxt, sig: &syn::Signature, is_router: bool) -> Sig {
    let mut out = Sig::default();
    let name = &sig.ident;
    if let Some(c) = &sig.constness {
        cx.error_spanned_by(c, format!("a flow method cannot be `const`: {SHAPE}"));
    }
    if let syn::Safety::Unsafe(u) = &sig.safety {
        cx.error_spanned_by(u, format!("a flow method cannot be `unsafe`: {SHAPE}"));
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned_by(abi, format!("a flow method cannot have an ABI: {SHAPE}"));
    }
    out.blocking = sig.asyncness.is_none();
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        cx.error_spanned_by(
            &sig.generics,
            "a flow method cannot be generic: the graph calls it with one concrete type; put type parameters on \
             the flow's impl block instead",
        );
    }
    if let Some(v) = &sig.variadic {
        cx.error_spanned_by(v, format!("a flow method cannot be variadic: {SHAPE}"));
    }

    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) => match &r.kind {
            syn::ReceiverKind::Reference(_, _, None) => {}
            syn::ReceiverKind::Reference(_, _, Some(m)) => cx.error_spanned_by(
                m,
                "flow methods take `&self`, not `&mut self`: methods of one run may run at the same time; keep \
                 what changes in the state (`cx.update(...)`)",
            ),
            _ => cx.error_spanned_by(r, format!("flow methods take `&self` as their first parameter: {SHAPE}")),
        },
        Some(other @ FnArg::Typed(_)) => {
            cx.error_spanned_by(other, format!("flow methods take `&self` as their first parameter: {SHAPE}"));
        }
        None => cx.error_at(
            sig.paren_token.span.join(),
            format!("flow methods take `&self` as their first parameter: write `{name}(&self, ...)`"),
        ),
    }
    for arg in inputs {
        let FnArg::Typed(pt) = arg else { continue };
        let ty = &*pt.ty;
        if is_ctx_ref(ty) {
            if out.payload.is_some() {
                cx.error_spanned_by(ty, "put the context parameter before the input parameter: `(&self, cx, input)`");
            } else if out.cx.is_some() {
                cx.error_spanned_by(pt, "a flow method takes the context once");
            }
            out.cx = Some(ty.clone());
        } else if is_ctx(ty) {
            cx.error_spanned_by(ty, "take the context by reference: `cx: &Ctx<State>`");
        } else if out.payload.is_none() {
            out.payload = Some(ty.clone());
        } else {
            cx.error_spanned_by(
                pt,
                format!(
                    "too many parameters: {SHAPE}; a method receives one value from its trigger, so put several \
                     values in one struct or in the state"
                ),
            );
        }
    }

    match &sig.output {
        ReturnType::Default => cx.error_at(
            sig.paren_token.span.join(),
            format!("a flow method returns a `Result`: add `-> Result<()>` (flow_core::Result) to `{name}`"),
        ),
        ReturnType::Type(_, ty) => match result_args(ty) {
            Some((t, e)) => {
                out.output = Some(t.clone());
                out.error = e.cloned();
            }
            None => cx.error_spanned_by(
                ty,
                format!(
                    "a flow method returns a `Result`: write `-> Result<{}>` (flow_core::Result, or \
                     `Result<T, E>` with an error that converts into flow_core::Error)",
                    attr::type_text(&ty.to_token_stream())
                ),
            ),
        },
    }
    if is_router && let Some(t) = &out.output {
        out.route = route(cx, t);
    }
    out
}

/// `T` and `E` of a path type whose last segment is `Result<T>` or `Result<T, E>`.
fn result_args(ty: &Type) -> Option<(&Type, Option<&Type>)> {
    let last = type_path(ty)?.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    let mut types = args.args.iter().map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    let t = types.next()??;
    let e = match types.next() {
        Some(e) => Some(e?),
        None => None,
    };
    if types.next().is_some() {
        return None;
    }
    Some((t, e))
}

/// The route of a router returning `Result<t>`.
fn route(cx: &Ctxt, t: &Type) -> Option<Route> {
    const HELP: &str = "a router returns an enum (or an Option of one): `-> Result<Route>` with \
                        `enum Route { ... }` whose variants its listeners handle, or `-> Result<Option<Route>>` to \
                        route nowhere on `None`";
    let (inner, optional) = match option_arg(t) {
        Some(inner) => (inner, true),
        None => (t, false),
    };
    let not_enum = |ty: &Type| {
        cx.error_spanned_by(
            ty,
            format!(
                "{HELP}; `{}` is not an enum: to route on a value, return an enum of the outcomes instead",
                attr::type_text(&ty.to_token_stream())
            ),
        );
    };
    let enum_path = match ungroup(inner) {
        Type::Path(p) if p.qself.is_none() => &p.path,
        other => {
            not_enum(other);
            return None;
        }
    };
    let enum_name = enum_path.segments.last()?.ident.to_string();
    // The macro cannot see the type's definition; these are the types that are certainly no
    // enum and that a router is most often given by mistake (a string or number to branch on,
    // a collection). A struct of the user's is reported by rustc on the route match.
    const NOT_ENUMS: &[&str] = &[
        "String", "str", "bool", "char", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128",
        "isize", "f32", "f64", "Vec", "VecDeque", "HashMap", "BTreeMap", "HashSet", "BTreeSet", "Box", "Rc", "Arc",
        "Cow", "PathBuf", "Duration",
    ];
    if NOT_ENUMS.contains(&enum_name.as_str()) {
        not_enum(inner);
        return None;
    }
    Some(Route { ty: t.clone(), inner: inner.clone(), optional, enum_name })
}

/// `T` of `Option<T>`.
fn option_arg(ty: &Type) -> Option<&Type> {
    let last = type_path(ty)?.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    match args.args.iter().collect::<Vec<_>>().as_slice() {
        [GenericArgument::Type(t)] => Some(t),
        _ => None,
    }
}

fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        Type::Paren(p) => ungroup(&p.elem),
        other => other,
    }
}

fn type_path(ty: &Type) -> Option<&Path> {
    match ungroup(ty) {
        Type::Path(p) if p.qself.is_none() => Some(&p.path),
        _ => None,
    }
}

/// A path whose last segment is `Ctx`.
fn is_ctx(ty: &Type) -> bool {
    type_path(ty).and_then(|p| p.segments.last()).is_some_and(|s| s.ident == "Ctx")
}

/// `&Ctx<...>`: the context parameter.
fn is_ctx_ref(ty: &Type) -> bool {
    match ungroup(ty) {
        Type::Reference(r) => r.mutability.is_none() && is_ctx(&r.elem),
        _ => false,
    }
}
