//! The graph checks: resolves every trigger to methods and route labels, then refuses graphs
//! that would misbehave at run time (unknown names, self loops, no start, unreachable methods,
//! payloads that cannot be typed). Type questions only rustc can answer (does this variant
//! exist, do these types agree) are left to the code `expand` emits, spanned on the user's
//! tokens.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{Ident, Type};

use crate::ast::{Flow, Method};
use crate::attr::{LabelPath, Terminal, TriggerExpr};
use crate::ctxt::Ctxt;

/// A trigger with names resolved to ids.
pub(crate) enum Resolved {
    Method(usize),
    Label(usize),
    Or(Vec<Resolved>),
    And(Vec<Resolved>),
}

/// A checked flow, ready to expand.
pub(crate) struct Graph<'a> {
    pub(crate) flow: &'a Flow,
    /// Per method: its resolved trigger.
    pub(crate) triggers: Vec<Option<Resolved>>,
    /// Route labels in order of first mention: their index is their `LabelId`.
    pub(crate) labels: Vec<LabelPath>,
    /// Per method: for routers, the labels their route enum can produce (its listened-to
    /// variants that it does not declare terminal).
    pub(crate) routes: Vec<Vec<usize>>,
    /// Per method: the method it undoes.
    pub(crate) compensates: Vec<Option<usize>>,
    /// Payload parameters whose type rustc must compare with what their trigger sends.
    pub(crate) payload_checks: Vec<PayloadCheck>,
    /// Per router none of whose routes is handled: the methods that listen to it by its name,
    /// which `expand` reports with the variants they can listen to instead.
    pub(crate) by_name: Vec<Vec<usize>>,
}

/// `param` must be the type every one of `sources` produces (one source, or the leaves of an
/// `or(...)`).
pub(crate) struct PayloadCheck {
    /// The method taking the parameter.
    pub(crate) method: Ident,
    pub(crate) param: Type,
    pub(crate) sources: Vec<TokenStream>,
    /// rustc's message when the check fails, in `diagnostic::on_unimplemented` syntax (`{Self}`
    /// is the parameter's type; user text is escaped).
    pub(crate) message: String,
    pub(crate) label: String,
    /// For an element of a tuple received from an `and(...)`: its position (from 1), which
    /// names the check apart from the method's other elements.
    pub(crate) part: Option<usize>,
}

/// Escapes text for a `diagnostic::on_unimplemented` format string.
fn escape_braces(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

impl PayloadCheck {
    /// The parameter `param` of `method` receives what `what` sends, `source`.
    fn single(param: &Type, method: &Ident, what: &str, source: TokenStream) -> Self {
        let ty = escape_braces(&crate::attr::type_text(&source));
        let what = escape_braces(what);
        PayloadCheck {
            method: method.clone(),
            param: param.clone(),
            message: format!("`{method}` receives {what}, `{ty}`, but its parameter is `{{Self}}`"),
            label: format!("expected `{ty}` here"),
            sources: vec![source],
            part: None,
        }
    }
}

pub(crate) fn check<'a>(cx: &Ctxt, flow: &'a Flow) -> Graph<'a> {
    let mut g = Graph {
        flow,
        triggers: Vec::new(),
        labels: Vec::new(),
        routes: vec![Vec::new(); flow.methods.len()],
        compensates: vec![None; flow.methods.len()],
        payload_checks: Vec::new(),
        by_name: vec![Vec::new(); flow.methods.len()],
    };
    if flow.item.trait_.is_some() {
        // Reported by the front end; the methods of a trait impl are not a flow.
        return g;
    }
    let before = cx.count();
    let triggers: Vec<_> = flow
        .methods
        .iter()
        .enumerate()
        .map(|(i, m)| m.trigger.as_ref().and_then(|t| resolve(cx, flow, i, t, &mut g.labels)))
        .collect();
    g.triggers = triggers;
    let names_ok = cx.count() == before;

    routes(cx, &mut g);
    if names_ok {
        unhandled_routers(cx, &mut g);
    }
    compensation(cx, &mut g);
    let has_start = starts(cx, flow);
    if names_ok && has_start {
        reachability(cx, &g);
    }
    payloads(cx, &mut g);
    g
}

// ---------------------------------------------------------------------------------------------
// Names

fn resolve(cx: &Ctxt, flow: &Flow, me: usize, t: &TriggerExpr, labels: &mut Vec<LabelPath>) -> Option<Resolved> {
    match t {
        TriggerExpr::Method(name) => {
            let method = &flow.methods[me].ident;
            if name == method {
                cx.error_spanned_by(
                    name,
                    format!(
                        "`{name}` listens to itself: a method cannot trigger itself directly; to loop, let a \
                         `#[router]` decide whether to run it again"
                    ),
                );
                return None;
            }
            match flow.method_index(name) {
                Some(i) if flow.methods[i].is_compensate => {
                    cx.error_spanned_by(
                        name,
                        format!(
                            "`{name}` is a compensation method: it runs only to undo a step of a failed run and \
                             triggers nothing; listen to a method of the normal flow"
                        ),
                    );
                    None
                }
                Some(i) => Some(Resolved::Method(i)),
                None => {
                    unknown_method(cx, flow, name, Some(method));
                    None
                }
            }
        }
        TriggerExpr::Label(label) => {
            let routers: Vec<&Method> = flow.methods.iter().filter(|m| m.is_router).collect();
            let route_known = routers.iter().all(|r| r.sig.route.is_some());
            if route_known && !routers.iter().any(|r| returns(r, &label.enum_name)) {
                let enum_path = crate::attr::path_text(&label.enum_path);
                let have = routers
                    .iter()
                    .filter_map(|r| {
                        r.sig.route.as_ref().map(|route| format!("`{}` returns `{}`", r.ident, route.enum_name))
                    })
                    .collect::<Vec<_>>();
                let have = if have.is_empty() {
                    "this flow has no `#[router]`".to_owned()
                } else {
                    format!("of its routers, {}", have.join(", "))
                };
                cx.error_spanned_by(
                    &label.enum_path,
                    format!(
                        "no router of this flow returns `{enum_path}` ({have}); listen to a variant of a route \
                         enum that a `#[router]` method returns as `Result<{enum_path}>`"
                    ),
                );
                return None;
            }
            let key = |l: &LabelPath| (l.enum_name.clone(), l.variant.to_string());
            let id = match labels.iter().position(|l| key(l) == key(label)) {
                Some(id) => id,
                None => {
                    labels.push(label.clone());
                    labels.len() - 1
                }
            };
            Some(Resolved::Label(id))
        }
        TriggerExpr::Or(parts) | TriggerExpr::And(parts) => {
            let parts: Vec<_> = parts.iter().map(|p| resolve(cx, flow, me, p, labels)).collect();
            let parts: Vec<_> = parts.into_iter().collect::<Option<_>>()?;
            Some(if matches!(t, TriggerExpr::Or(_)) { Resolved::Or(parts) } else { Resolved::And(parts) })
        }
    }
}

fn returns(router: &Method, enum_name: &str) -> bool {
    router.sig.route.as_ref().is_some_and(|r| r.enum_name == enum_name)
}

/// Reports a name that is no method of the flow, with the closest name when there is one.
fn unknown_method(cx: &Ctxt, flow: &Flow, name: &Ident, exclude: Option<&Ident>) {
    let wanted = name.to_string();
    if flow.plain_fns.iter().any(|f| *f == wanted) {
        cx.error_spanned_by(
            name,
            format!(
                "`{name}` is not part of the flow: it has no `#[start]`, `#[listen(...)]` or `#[router(...)]`, \
                 so it never runs as a step and cannot trigger anything"
            ),
        );
        return;
    }
    let candidates: Vec<String> = flow
        .methods
        .iter()
        .filter(|m| !m.is_compensate && Some(&m.ident) != exclude)
        .map(|m| m.ident.to_string())
        .collect();
    let hint = match closest(&wanted, &candidates) {
        Some(best) => format!("did you mean `{best}`?"),
        None if candidates.is_empty() => "the flow has no other method".to_owned(),
        None => format!("the flow's methods are {}", quoted(&candidates)),
    };
    cx.error_spanned_by(name, format!("no method named `{name}` in flow `{}`: {hint}", flow.name));
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// The closest candidate within half the name's length in edits (at least one edit): a third
/// would miss the usual slips on short words, such as `retires` for `retry`.
pub(crate) fn closest<'a>(name: &str, candidates: &'a [String]) -> Option<&'a str> {
    let limit = (name.chars().count() / 2).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

/// Edit distance counting an insertion, a deletion, a substitution or a swap of two neighbours
/// as one edit (optimal string alignment), so that `wirte` is one edit from `write`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

// ---------------------------------------------------------------------------------------------
// Routers

/// Works out each router's labels, and checks its `terminal(...)` variants.
fn routes(cx: &Ctxt, g: &mut Graph<'_>) {
    for (i, m) in g.flow.methods.iter().enumerate() {
        let Some(route) = &m.sig.route else { continue };
        let terminal: Vec<&LabelPath> = match &m.options.terminal {
            Some(Terminal::Variants(vs)) => vs.iter().collect(),
            _ => Vec::new(),
        };
        for t in &terminal {
            if t.enum_name != route.enum_name {
                cx.error_spanned_by(
                    &t.enum_path,
                    format!(
                        "`{}` is not the route type of `{}`: its `terminal(...)` lists variants of `{}`",
                        crate::attr::path_text(&t.enum_path),
                        m.ident,
                        route.enum_name
                    ),
                );
            }
        }
        g.routes[i] = g
            .labels
            .iter()
            .enumerate()
            .filter(|(_, l)| l.enum_name == route.enum_name)
            .filter(|(_, l)| !terminal.iter().any(|t| t.variant == l.variant))
            .map(|(id, _)| id)
            .collect();
    }
}

/// A router none of whose routes is handled (no listener on any variant of its enum, no
/// `terminal`): certain to fail rustc's exhaustiveness check, so it is reported here in words
/// that name the fixes. Listeners that listen to the router by its name are the usual cause
/// (they run after every route, handling none), so the error goes on them when there are some.
/// The variants are known only to rustc, so unless the route type names the impl's parameters
/// the error is left to `expand`'s const checks, which list them.
fn unhandled_routers(cx: &Ctxt, g: &mut Graph<'_>) {
    for (i, m) in g.flow.methods.iter().enumerate() {
        let Some(route) = &m.sig.route else { continue };
        let enum_name = &route.enum_name;
        if g.routes[i].is_empty() && matches!(m.options.terminal, Some(Terminal::All)) {
            // Nothing listens and everything ends: not a router. This is also how a struct
            // returned by a router would get through, since the macro cannot see its definition.
            cx.error_spanned_by(
                &route.ty,
                format!(
                    "the router `{}` routes nowhere: no method listens to a variant of `{enum_name}` and `terminal` \
                     ends them all; a router returns an enum (or an Option of one) whose variants its listeners \
                     handle: listen to one with `#[listen({enum_name}::Variant)]`, or make `{}` an ordinary \
                     `#[listen]` or `#[start]` method",
                    m.ident, m.ident
                ),
            );
            continue;
        }
        if !g.routes[i].is_empty() || m.options.terminal.is_some() {
            continue;
        }
        let fixes = format!(
            "listen to its variants, `#[listen({enum_name}::Variant)]`, or end the ones no method handles with \
             `terminal({enum_name}::Variant)` (or a bare `terminal`) on `#[router]`"
        );
        let by_name: Vec<usize> = g
            .triggers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.as_ref().is_some_and(|t| mentions(t, i)))
            .map(|(l, _)| l)
            .collect();
        // The variants are known only to rustc: unless the route type names the impl's
        // parameters, `expand`'s const check reports the gap and lists them.
        let const_checked = !g.flow.names_own_generics(&route.inner);
        if by_name.is_empty() {
            if const_checked {
                continue;
            }
            cx.error_spanned_by(
                &route.ty,
                format!(
                    "no route of the router `{}` is handled: no method listens to a variant of `{enum_name}`; {fixes}",
                    m.ident
                ),
            );
            continue;
        }
        if const_checked {
            g.by_name[i] = by_name;
            continue;
        }
        for l in by_name.into_iter().map(|l| &g.flow.methods[l]) {
            let trigger = l.trigger.as_ref().map(TriggerExpr::text).unwrap_or_default();
            cx.error_spanned_by(
                &l.ident,
                format!(
                    "`{}` listens to the router `{}` by its name (`{trigger}`), which handles none of its routes, and no \
                     method listens to one; {fixes}",
                    l.ident, m.ident
                ),
            );
        }
    }
}

/// Whether method `m` appears in the trigger.
fn mentions(t: &Resolved, m: usize) -> bool {
    match t {
        Resolved::Method(x) => *x == m,
        Resolved::Label(_) => false,
        Resolved::Or(parts) | Resolved::And(parts) => parts.iter().any(|p| mentions(p, m)),
    }
}

// ---------------------------------------------------------------------------------------------
// Compensation

fn compensation(cx: &Ctxt, g: &mut Graph<'_>) {
    let flow = g.flow;
    for (i, m) in flow.methods.iter().enumerate() {
        let Some(target) = &m.compensates else { continue };
        if *target == m.ident {
            cx.error_spanned_by(target, format!("`{target}` cannot undo itself: name the method it compensates"));
            continue;
        }
        match flow.method_index(target) {
            Some(t) if flow.methods[t].is_compensate => cx.error_spanned_by(
                target,
                format!(
                    "`{target}` is itself a compensation method; name the step of the flow that `{}` undoes",
                    m.ident
                ),
            ),
            Some(t) => {
                if let Some(other) = g.compensates.iter().position(|c| *c == Some(t)) {
                    cx.error_spanned_by(
                        target,
                        format!(
                            "`{target}` already has an undo step, `{}`; a step has at most one `#[compensate]` method",
                            flow.methods[other].ident
                        ),
                    );
                } else {
                    g.compensates[i] = Some(t);
                }
            }
            None => unknown_method(cx, flow, target, Some(&m.ident)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Starts and reachability

/// A start that runs at kickoff: without a trigger, or one that also listens.
fn is_unconditional_start(m: &Method) -> bool {
    m.is_start && (m.trigger.is_none() || m.start_listens) && !m.is_compensate
}

fn starts(cx: &Ctxt, flow: &Flow) -> bool {
    if flow.methods.iter().any(is_unconditional_start) {
        return true;
    }
    let conditional: Vec<String> = flow
        .methods
        .iter()
        .filter(|m| m.is_start && m.trigger.is_some() && !m.start_listens)
        .map(|m| m.ident.to_string())
        .collect();
    let note = match conditional.as_slice() {
        [] => String::new(),
        [one] => format!(" (`{one}` is a conditional start: it runs only when its trigger fires)"),
        many => format!(" ({} are conditional starts: they run only when their triggers fire)", quoted(many)),
    };
    cx.error_spanned_by(
        &flow.item.self_ty,
        format!("flow `{}` has no start{note}: mark the method that begins a run with `#[start]`", flow.name),
    );
    false
}

/// Reports methods that no run can reach: a fixpoint from the unconditional starts, where a
/// method is reachable once its trigger can fire.
fn reachability(cx: &Ctxt, g: &Graph<'_>) {
    let methods = &g.flow.methods;
    let mut reached: Vec<bool> = methods.iter().map(is_unconditional_start).collect();
    loop {
        let mut changed = false;
        for (i, t) in g.triggers.iter().enumerate() {
            if reached[i] {
                continue;
            }
            if let Some(t) = t
                && fires(g, t, &reached)
            {
                reached[i] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    for (i, m) in methods.iter().enumerate() {
        // Compensation runs on failure, outside the event graph; an unresolved trigger is
        // reported already.
        let Some(trigger) = &m.trigger else { continue };
        if reached[i] || m.is_compensate {
            continue;
        }
        cx.error_spanned_by(
            &m.ident,
            format!(
                "`{}` can never run: no start leads to its trigger `{}`; listen to a method that runs, or to a \
                 variant that a reachable router returns",
                m.ident,
                trigger.text()
            ),
        );
    }
}

fn fires(g: &Graph<'_>, t: &Resolved, reached: &[bool]) -> bool {
    match t {
        Resolved::Method(m) => reached[*m],
        Resolved::Label(l) => g.routes.iter().enumerate().any(|(r, labels)| reached[r] && labels.contains(l)),
        Resolved::Or(parts) => parts.iter().any(|p| fires(g, p, reached)),
        Resolved::And(parts) => parts.iter().all(|p| fires(g, p, reached)),
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads

fn payloads(cx: &Ctxt, g: &mut Graph<'_>) {
    let flow = g.flow;
    for (i, m) in flow.methods.iter().enumerate() {
        let Some(param) = &m.sig.payload else { continue };
        if m.is_compensate {
            if let Some(t) = g.compensates[i]
                && let Some(out) = &flow.methods[t].sig.output
            {
                let what = format!("the output of `{}` (the step it undoes)", flow.methods[t].ident);
                g.payload_checks.push(PayloadCheck::single(param, &m.ident, &what, out.to_token_stream()));
            }
            continue;
        }
        let Some(trigger) = &m.trigger else {
            if m.is_start {
                cx.error_spanned_by(
                    param,
                    "a `#[start]` runs at kickoff, when no method has produced anything yet, so it takes no input \
                     parameter: remove it and read the run's input from the state",
                );
            }
            continue;
        };
        if m.start_listens {
            cx.error_spanned_by(
                param,
                "a `#[start]` that also listens runs at kickoff, when no method has produced anything yet, so it \
                 takes no input parameter: remove it, and read what its trigger sent with `cx.output(Self::METHOD)`",
            );
            continue;
        }
        let Some(resolved) = &g.triggers[i] else { continue };
        if trigger.has_and() {
            let checks = and_checks(cx, g, param, &m.ident, trigger, resolved);
            g.payload_checks.extend(checks);
            continue;
        }
        let mut leaves = Vec::new();
        leaf_sources(g, resolved, &mut leaves);
        // A leaf whose output could not be read is reported already.
        let leaves: Vec<Leaf> = leaves.into_iter().filter(|l| l.source.is_some()).collect();
        let check = match leaves.as_slice() {
            [] => continue,
            [one] => {
                let what = if one.is_route {
                    format!("the route value of {}", one.name)
                } else {
                    format!("the output of {}", one.name)
                };
                PayloadCheck::single(param, &m.ident, &what, one.source.clone().unwrap_or_default())
            }
            many => or_check(param, &m.ident, trigger, many),
        };
        g.payload_checks.push(check);
    }
}

/// One check for a listener on `or(...)`: it receives whichever trigger fires, so every
/// trigger must send its parameter's type. When the triggers disagree among themselves, the
/// message says so and which sends what, rather than pointing at one trigger (whose fix would
/// break the others).
fn or_check(param: &Type, method: &Ident, trigger: &crate::attr::TriggerExpr, leaves: &[Leaf]) -> PayloadCheck {
    let sources: Vec<TokenStream> = leaves.iter().filter_map(|l| l.source.clone()).collect();
    let texts: Vec<String> = sources.iter().map(|s| escape_braces(&crate::attr::type_text(s))).collect();
    let trigger = escape_braces(&trigger.text());
    let agree = texts.windows(2).all(|w| w[0] == w[1]);
    let (message, label) = if agree {
        (
            format!("`{method}` receives `{}` from `{trigger}`, but its parameter is `{{Self}}`", texts[0]),
            format!("expected `{}` here", texts[0]),
        )
    } else {
        let sends: Vec<String> =
            leaves.iter().zip(&texts).map(|(l, t)| format!("{} sends `{t}`", escape_braces(&l.name))).collect();
        (
            format!(
                "the triggers of `{method}` disagree: {}; a listener on `or(...)` receives whichever fires, so \
                 they must send one type: make them return the same type, or remove the parameter and read \
                 what `{method}` needs from the state",
                sends.join(", ")
            ),
            format!("`{trigger}` sends different types"),
        )
    };
    PayloadCheck { method: method.clone(), param: param.clone(), sources, message, label, part: None }
}

/// What a trigger sends its listener, as a type: a method's output, a route's enum, the
/// type the parts of an `or` agree on, a tuple of the parts of an `and` in the order
/// written. `Ok(None)` when a part's type is unknown (reported already); `Err` names the
/// `or` whose parts disagree.
fn sent_type(g: &Graph<'_>, t: &Resolved) -> Result<Option<TokenStream>, String> {
    match t {
        Resolved::Method(m) => Ok(g.flow.methods[*m].sig.output.as_ref().map(ToTokens::to_token_stream)),
        Resolved::Label(l) => Ok(Some(g.labels[*l].enum_path.to_token_stream())),
        Resolved::Or(parts) => {
            let mut types = Vec::new();
            for p in parts {
                let Some(ty) = sent_type(g, p)? else { return Ok(None) };
                types.push(ty);
            }
            let texts: Vec<String> = types.iter().map(crate::attr::type_text).collect();
            if texts.windows(2).all(|w| w[0] == w[1]) {
                Ok(types.into_iter().next())
            } else {
                let sends: Vec<String> =
                    parts.iter().zip(&texts).map(|(p, t)| format!("`{}` sends `{t}`", resolved_text(g, p))).collect();
                Err(format!("the parts of `{}` disagree: {}", resolved_text(g, t), sends.join(", ")))
            }
        }
        Resolved::And(parts) => {
            let mut types = Vec::new();
            for p in parts {
                let Some(ty) = sent_type(g, p)? else { return Ok(None) };
                types.push(ty);
            }
            // Written as a person writes a tuple: `(A, B)`, and `(A,)` for one part.
            Ok(Some(match types.as_slice() {
                [one] => quote::quote!((#one,)),
                many => quote::quote!((#(#many),*)),
            }))
        }
    }
}

/// A resolved trigger written out as the user wrote it.
fn resolved_text(g: &Graph<'_>, t: &Resolved) -> String {
    match t {
        Resolved::Method(m) => g.flow.methods[*m].ident.to_string(),
        Resolved::Label(l) => crate::attr::path_text(&g.labels[*l].path),
        Resolved::Or(parts) | Resolved::And(parts) => {
            let name = if matches!(t, Resolved::Or(_)) { "or" } else { "and" };
            let parts: Vec<String> = parts.iter().map(|p| resolved_text(g, p)).collect();
            format!("{name}({})", parts.join(", "))
        }
    }
}

/// The input of a listener whose trigger holds an `and(...)`: the outputs of the `and`'s parts
/// as a tuple, in the order written. A tuple parameter of `and(...)` itself is checked element
/// by element, each on its own token; a tuple of the wrong length is refused here; any other
/// type is compared with the whole tuple.
fn and_checks(
    cx: &Ctxt,
    g: &Graph<'_>,
    param: &Type,
    method: &Ident,
    trigger: &TriggerExpr,
    t: &Resolved,
) -> Vec<PayloadCheck> {
    let trigger_text = trigger.text();
    let sent = match sent_type(g, t) {
        Ok(Some(sent)) => sent,
        Ok(None) => return Vec::new(),
        Err(disagree) => {
            cx.error_spanned_by(
                param,
                format!(
                    "`{method}` cannot take an input from `{trigger_text}`: {disagree}; an `or(...)` sends whichever \
                     part fires, so its parts must send one type: make them return the same type, or remove the \
                     parameter and read the outputs with `cx.output(Self::METHOD)`"
                ),
            );
            return Vec::new();
        }
    };
    let sent_text = crate::attr::type_text(&sent);
    if let (Resolved::And(parts), Type::Tuple(tuple)) = (t, ungroup(param)) {
        if tuple.elems.len() != parts.len() {
            cx.error_spanned_by(
                param,
                format!(
                    "`{method}` listens to `{trigger_text}`, which sends the outputs of its {} parts as a tuple in \
                     the order written, `{sent_text}`; this tuple has {} element{}: write `{sent_text}`",
                    parts.len(),
                    tuple.elems.len(),
                    if tuple.elems.len() == 1 { "" } else { "s" }
                ),
            );
            return Vec::new();
        }
        let mut checks = Vec::new();
        for (n, (elem, part)) in tuple.elems.iter().zip(parts).enumerate() {
            // A part whose type disagrees or is unknown was handled above.
            let Ok(Some(ty)) = sent_type(g, part) else { continue };
            let ty_text = escape_braces(&crate::attr::type_text(&ty));
            let part_text = escape_braces(&resolved_text(g, part));
            checks.push(PayloadCheck {
                method: method.clone(),
                param: elem.clone(),
                message: format!(
                    "element {} of the tuple `{method}` receives from `{}` is what `{part_text}` sends, `{ty_text}`, \
                     but it is written `{{Self}}`",
                    n + 1,
                    escape_braces(&trigger_text)
                ),
                label: format!("expected `{ty_text}` here"),
                sources: vec![ty],
                part: Some(n + 1),
            });
        }
        return checks;
    }
    let what = format!("from `{trigger_text}` the outputs of its parts as a tuple");
    vec![PayloadCheck::single(param, method, &what, sent)]
}

/// The type inside any parentheses or invisible groups.
fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        Type::Paren(p) => ungroup(&p.elem),
        other => other,
    }
}

/// One leaf of a trigger: what it sends (a method's output type, a label's route enum) and
/// how to name it in a message.
struct Leaf {
    source: Option<TokenStream>,
    name: String,
    is_route: bool,
}

fn leaf_sources(g: &Graph<'_>, t: &Resolved, out: &mut Vec<Leaf>) {
    match t {
        Resolved::Method(m) => {
            let m = &g.flow.methods[*m];
            out.push(Leaf {
                source: m.sig.output.as_ref().map(ToTokens::to_token_stream),
                name: format!("`{}`", m.ident),
                is_route: false,
            });
        }
        Resolved::Label(l) => {
            let label = &g.labels[*l];
            out.push(Leaf {
                source: Some(label.enum_path.to_token_stream()),
                name: format!("`{}`", crate::attr::path_text(&label.path)),
                is_route: true,
            });
        }
        Resolved::Or(parts) | Resolved::And(parts) => parts.iter().for_each(|p| leaf_sources(g, p, out)),
    }
}

#[cfg(test)]
mod tests {
    use super::{closest, edit_distance};

    #[test]
    fn distance() {
        assert_eq!(edit_distance("research", "reserch"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("wirte", "write"), 1);
    }

    #[test]
    fn suggestions() {
        let names = vec!["research".to_owned(), "write".to_owned(), "deepen".to_owned()];
        assert_eq!(closest("reserch", &names), Some("research"));
        assert_eq!(closest("wirte", &names), Some("write"));
        assert_eq!(closest("publish", &names), None);
        let options = vec!["retry".to_owned(), "timeout".to_owned(), "non_critical".to_owned()];
        assert_eq!(closest("retires", &options), Some("retry"));
        assert_eq!(closest("timout", &options), Some("timeout"));
        assert_eq!(closest("deadline", &options), None);
    }
}
