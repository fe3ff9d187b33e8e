//! Reading the arguments of `#[flow(...)]` and of the method attributes into options and
//! triggers. Every problem goes to the [`Ctxt`]; a bad option never hides the next one.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, Lit, LitStr, Path, Token, Type};

use crate::ctxt::Ctxt;
use crate::duration::{self, Dur};

/// One comma-separated argument: `path`, `path(...)` or `path = value`.
pub(crate) struct Arg {
    pub(crate) path: Path,
    pub(crate) kind: ArgKind,
}

pub(crate) enum ArgKind {
    Flag,
    List(TokenStream),
    Value(ArgValue),
}

pub(crate) enum ArgValue {
    /// `state = Type`: a type may contain commas (`HashMap<K, V>`), so it is parsed as a type.
    Type(Box<Type>),
    Expr(Box<Expr>),
}

impl Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(LitStr) {
            // CrewAI names triggers with strings (`@listen("approved")`); here they are paths.
            let lit: LitStr = input.parse()?;
            return Err(syn::Error::new(lit.span(), string_trigger_message(&lit.value())));
        }
        let path = input.call(Path::parse_mod_style)?;
        let kind = if input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            ArgKind::List(content.parse()?)
        } else if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            if path.is_ident("state") { ArgValue::Type(input.parse()?) } else { ArgValue::Expr(input.parse()?) }.into()
        } else {
            ArgKind::Flag
        };
        Ok(Arg { path, kind })
    }

    /// The single identifier naming this argument, if it is one.
    pub(crate) fn name(&self) -> Option<String> {
        self.path.get_ident().map(Ident::to_string)
    }

    /// How the argument looks, for messages: `retry(...)`, `timeout = ...`, `name`.
    fn shape(&self) -> String {
        let path = path_text(&self.path);
        match self.kind {
            ArgKind::Flag => path,
            ArgKind::List(_) => format!("{path}(...)"),
            ArgKind::Value(_) => format!("{path} = ..."),
        }
    }
}

impl From<ArgValue> for ArgKind {
    fn from(value: ArgValue) -> Self {
        ArgKind::Value(value)
    }
}

impl ToTokens for Arg {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        self.path.to_tokens(tokens);
        match &self.kind {
            ArgKind::Flag => {}
            ArgKind::List(inner) => {
                // Re-wrapping keeps the error range over the whole `name(...)`.
                syn::token::Paren(self.path.span()).surround(tokens, |t| inner.to_tokens(t));
            }
            ArgKind::Value(ArgValue::Type(ty)) => {
                <Token![=]>::default().to_tokens(tokens);
                ty.to_tokens(tokens);
            }
            ArgKind::Value(ArgValue::Expr(e)) => {
                <Token![=]>::default().to_tokens(tokens);
                e.to_tokens(tokens);
            }
        }
    }
}

/// The error for a trigger written as a string: triggers are Rust paths, checked at compile time.
fn string_trigger_message(text: &str) -> String {
    let method = syn::parse_str::<Ident>(text).map_or_else(|_| "method_name".to_owned(), |i| i.to_string());
    format!(
        "a trigger is not a string: write a method name or a route variant as a path, without quotes: \
         `#[listen({method})]` for a method, `#[listen(Route::Variant)]` for a route that a `#[router]` returns"
    )
}

/// Parses comma-separated arguments; a syntax error is reported and yields no arguments.
pub(crate) fn parse_args(cx: &Ctxt, tokens: TokenStream) -> Vec<Arg> {
    let parser = Punctuated::<Arg, Token![,]>::parse_terminated_with;
    match (|input: ParseStream<'_>| parser(input, Arg::parse)).parse2(tokens) {
        Ok(args) => args.into_iter().collect(),
        Err(err) => {
            cx.syn_error(err);
            Vec::new()
        }
    }
}

/// A path written out without spaces (`Quality`, `crate::routes::Quality`).
pub(crate) fn path_text(path: &Path) -> String {
    type_text(&path.to_token_stream())
}

/// Tokens written out compactly, the way a person writes a type: `Option<Vec<String>>`,
/// `(String, u32)`, `&'static str`.
pub(crate) fn type_text(tokens: &TokenStream) -> String {
    let raw = tokens.to_string();
    let mut out = String::with_capacity(raw.len());
    let chars: Vec<char> = raw.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let prev = out.chars().last();
            let next = chars.get(i + 1).copied();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '\'');
            // Keep the space only where two words would otherwise merge (`dyn Trait`, `'a str`).
            if word(prev) && word(next) {
                out.push(' ');
            }
        } else {
            out.push(c);
            if c == ',' {
                out.push(' ');
            }
        }
    }
    out
}

/// `did you mean `retry`? ` for a misspelt option, with the suggestion helper that method names
/// use; empty when no option is close.
fn did_you_mean(name: &str, options: &[&str]) -> String {
    let options: Vec<String> = options.iter().map(|o| (*o).to_owned()).collect();
    crate::check::closest(name, &options).map_or_else(String::new, |best| format!("did you mean `{best}`? "))
}

/// Records `key` as seen; reports a duplicate on its second occurrence.
fn first_time(cx: &Ctxt, seen: &mut Vec<String>, key: &str, arg: &Arg) -> bool {
    if seen.iter().any(|k| k == key) {
        cx.error_spanned_by(&arg.path, format!("duplicate option `{key}`: give it once"));
        return false;
    }
    seen.push(key.to_owned());
    true
}

// ---------------------------------------------------------------------------------------------
// Triggers

/// `Enum::Variant` in a trigger or a `terminal(...)` list.
#[derive(Clone)]
pub(crate) struct LabelPath {
    /// The whole path as written.
    pub(crate) path: Path,
    /// The path without its variant: the route enum as written (`Quality`, `routes::Quality`).
    pub(crate) enum_path: Path,
    /// The enum's own name, by which labels and routers are matched.
    pub(crate) enum_name: String,
    pub(crate) variant: Ident,
}

impl LabelPath {
    fn new(path: &Path) -> Option<Self> {
        let mut enum_path = path.clone();
        if path.segments.len() < 2 {
            return None;
        }
        let variant = enum_path.segments.pop()?.ident;
        // Drop the trailing `::` that popping the variant leaves behind.
        enum_path.segments.pop_punct();
        let enum_name = enum_path.segments.last()?.ident.to_string();
        Some(LabelPath { path: path.clone(), enum_path, enum_name, variant })
    }
}

/// What makes a method run, as written.
#[derive(Clone)]
pub(crate) enum TriggerExpr {
    Method(Ident),
    Label(LabelPath),
    Or(Vec<TriggerExpr>),
    And(Vec<TriggerExpr>),
}

impl TriggerExpr {
    /// The trigger written out, for messages: `or(a, Route::B)`.
    pub(crate) fn text(&self) -> String {
        match self {
            TriggerExpr::Method(m) => m.to_string(),
            TriggerExpr::Label(l) => path_text(&l.path),
            TriggerExpr::Or(parts) | TriggerExpr::And(parts) => {
                let name = if matches!(self, TriggerExpr::Or(_)) { "or" } else { "and" };
                let parts: Vec<String> = parts.iter().map(TriggerExpr::text).collect();
                format!("{name}({})", parts.join(", "))
            }
        }
    }

    /// Whether an `and(...)` appears anywhere in the trigger.
    pub(crate) fn has_and(&self) -> bool {
        match self {
            TriggerExpr::Method(_) | TriggerExpr::Label(_) => false,
            TriggerExpr::And(_) => true,
            TriggerExpr::Or(parts) => parts.iter().any(TriggerExpr::has_and),
        }
    }
}

const TRIGGER_HELP: &str = "a trigger is a method name (`fetch`), a route variant (`Route::Variant`), \
                            `or(a, b, ...)` or `and(a, b, ...)`";

/// Reads one trigger argument.
fn trigger(cx: &Ctxt, arg: &Arg) -> Option<TriggerExpr> {
    match &arg.kind {
        ArgKind::Flag => {
            if arg.path.leading_colon.is_none() && arg.path.segments.len() == 1 {
                return Some(TriggerExpr::Method(arg.path.segments[0].ident.clone()));
            }
            if arg.path.segments.len() >= 2 {
                return LabelPath::new(&arg.path).map(TriggerExpr::Label);
            }
            cx.error_spanned_by(&arg.path, format!("`{}` is not a trigger: {TRIGGER_HELP}", path_text(&arg.path)));
            None
        }
        ArgKind::List(inner) => {
            let combinator = arg.name();
            let is_or = match combinator.as_deref() {
                Some("or") => true,
                Some("and") => false,
                _ => {
                    // `#[start(retires(...))]`: a misspelt option in the trigger's place.
                    let suggestion = combinator.as_deref().map(|n| did_you_mean(n, &OPTION_NAMES)).unwrap_or_default();
                    cx.error_spanned_by(
                        &arg.path,
                        format!("unknown trigger `{}`: {suggestion}{TRIGGER_HELP}", arg.shape()),
                    );
                    return None;
                }
            };
            let name = if is_or { "or" } else { "and" };
            let before = cx.count();
            let parts = parse_args(cx, inner.clone());
            if cx.count() != before {
                // A syntax error (a string trigger, say) is reported; the count is unknown.
                return None;
            }
            if parts.len() < 2 {
                cx.error_spanned_by(
                    arg,
                    format!("`{name}(...)` needs at least two triggers; for a single trigger write it alone"),
                );
                return None;
            }
            let parts: Vec<_> = parts.iter().map(|p| trigger(cx, p)).collect();
            let parts: Option<Vec<_>> = parts.into_iter().collect();
            let parts = parts?;
            Some(if is_or { TriggerExpr::Or(parts) } else { TriggerExpr::And(parts) })
        }
        ArgKind::Value(_) => {
            cx.error_spanned_by(arg, format!("`{}` is not a trigger: {TRIGGER_HELP}", arg.shape()));
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Options shared by `#[flow]` and the method attributes

/// `retry(...)`.
#[derive(Clone)]
pub(crate) struct Retry {
    pub(crate) attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) jitter: bool,
    pub(crate) invalid_reply: u32,
}

#[derive(Clone, Copy)]
pub(crate) enum Backoff {
    Fixed(u64),
    Exponential { initial: u64, max: u64 },
}

/// The backoff when `retry(...)` names none: exponential from one second, capped at a minute.
const DEFAULT_BACKOFF: Backoff = Backoff::Exponential { initial: 1_000, max: 60_000 };

const RETRY_HELP: &str = "retry(attempts = N, backoff = fixed(\"1s\") | exponential(\"500ms\", max = \"30s\"), \
                          jitter, invalid_reply = N)";

fn retry(cx: &Ctxt, arg: &Arg, inner: &TokenStream) -> Option<Retry> {
    let errors = cx.count();
    let mut seen = Vec::new();
    let mut attempts = None;
    let mut backoff = None;
    let mut jitter = false;
    let mut invalid_reply = None;
    for part in parse_args(cx, inner.clone()) {
        let Some(key) = part.name() else {
            cx.error_spanned_by(&part.path, format!("unknown retry option `{}`; write {RETRY_HELP}", part.shape()));
            continue;
        };
        if !first_time(cx, &mut seen, &key, &part) {
            continue;
        }
        match (key.as_str(), &part.kind) {
            ("attempts", ArgKind::Value(v)) => {
                attempts = count(cx, v, &part, "attempts", "total attempts, including the first", "; 1 means no retry")
            }
            ("invalid_reply", ArgKind::Value(v)) => {
                invalid_reply = count(
                    cx,
                    v,
                    &part,
                    "invalid_reply",
                    "total attempts for a reply that does not parse",
                    "; 1 means no retry",
                )
            }
            ("backoff", ArgKind::Value(ArgValue::Expr(e))) => backoff = parse_backoff(cx, e),
            ("jitter", ArgKind::Flag) => jitter = true,
            ("attempts" | "invalid_reply" | "backoff" | "jitter", _) => {
                cx.error_spanned_by(&part, format!("malformed `{key}`; write {RETRY_HELP}"));
            }
            _ => cx.error_spanned_by(
                &part.path,
                format!(
                    "unknown retry option `{key}`; {}write {RETRY_HELP}",
                    did_you_mean(&key, &["attempts", "backoff", "jitter", "invalid_reply"])
                ),
            ),
        }
    }
    if attempts.is_none() && invalid_reply.is_none() && cx.count() == errors {
        cx.error_spanned_by(
            arg,
            "`retry(...)` needs `attempts = N` (total attempts, including the first), for example \
             retry(attempts = 3, backoff = exponential(\"500ms\", max = \"30s\"))",
        );
    }
    if cx.count() != errors {
        return None;
    }
    Some(Retry {
        attempts: attempts.unwrap_or(1),
        backoff: backoff.unwrap_or(DEFAULT_BACKOFF),
        jitter,
        invalid_reply: invalid_reply.unwrap_or(1),
    })
}

/// A positive whole number such as `attempts = 3`.
fn count(cx: &Ctxt, value: &ArgValue, arg: &Arg, key: &str, what: &str, zero: &str) -> Option<u32> {
    let lit = match value {
        ArgValue::Expr(e) => match &**e {
            Expr::Lit(syn::ExprLit { lit: Lit::Int(lit), .. }) => Some(lit),
            _ => None,
        },
        ArgValue::Type(_) => None,
    };
    let Some(lit) = lit else {
        cx.error_spanned_by(arg, format!("`{key}` takes a whole number ({what}), for example `{key} = 3`"));
        return None;
    };
    match lit.base10_parse::<u32>() {
        Ok(0) => {
            cx.error_spanned_by(lit, format!("`{key}` must be at least 1 ({what}){zero}"));
            None
        }
        Ok(n) => Some(n),
        Err(_) => {
            cx.error_spanned_by(lit, format!("`{key}` must be a whole number from 1 to {}", u32::MAX));
            None
        }
    }
}

fn parse_backoff(cx: &Ctxt, e: &Expr) -> Option<Backoff> {
    const HELP: &str = "write `backoff = fixed(\"1s\")` or `backoff = exponential(\"500ms\", max = \"30s\")`";
    let Expr::Call(call) = e else {
        cx.error_spanned_by(e, format!("malformed backoff: {HELP}"));
        return None;
    };
    let name = match &*call.func {
        Expr::Path(p) => p.path.get_ident().map(Ident::to_string),
        _ => None,
    };
    let args: Vec<&Expr> = call.args.iter().collect();
    match (name.as_deref(), args.as_slice()) {
        (Some("fixed"), [delay]) => Some(Backoff::Fixed(backoff_duration(cx, delay, HELP)?.millis)),
        (Some("exponential"), [initial, rest @ ..]) if rest.len() <= 1 => {
            let initial = backoff_duration(cx, initial, HELP);
            let max = match rest.first() {
                Some(Expr::Assign(assign)) if matches!(&*assign.left, Expr::Path(p) if p.path.is_ident("max")) => {
                    backoff_duration(cx, &assign.right, HELP)
                }
                Some(other) => {
                    cx.error_spanned_by(other, format!("expected `max = \"...\"`: {HELP}"));
                    None
                }
                None => None,
            };
            let initial = initial?;
            match (rest.first(), max) {
                (None, _) => {
                    // No cap written: a hundred times the first delay, as Temporal does.
                    Some(Backoff::Exponential { initial: initial.millis, max: initial.millis.saturating_mul(100) })
                }
                (Some(_), Some(max)) if max.millis < initial.millis => {
                    cx.error_spanned_by(
                        &max.lit,
                        format!("the cap `{}` is below the first delay `{}`", max.lit.value(), initial.lit.value()),
                    );
                    None
                }
                (Some(_), Some(max)) => Some(Backoff::Exponential { initial: initial.millis, max: max.millis }),
                (Some(_), None) => None,
            }
        }
        (Some("fixed" | "exponential"), _) => {
            cx.error_spanned_by(e, format!("malformed backoff: {HELP}"));
            None
        }
        _ => {
            cx.error_spanned_by(&call.func, format!("unknown backoff: {HELP}"));
            None
        }
    }
}

fn backoff_duration(cx: &Ctxt, e: &Expr, help: &str) -> Option<Dur> {
    match e {
        Expr::Lit(syn::ExprLit { lit: Lit::Str(lit), .. }) => duration_lit(cx, lit),
        _ => {
            cx.error_spanned_by(e, format!("expected a duration string such as \"500ms\": {help}"));
            None
        }
    }
}

fn duration_lit(cx: &Ctxt, lit: &LitStr) -> Option<Dur> {
    match duration::parse(lit) {
        Ok(d) => Some(d),
        Err(msg) => {
            cx.error_spanned_by(lit, msg);
            None
        }
    }
}

/// `park_after = "30s"`: a duration, zero included (every wait parks); `park_after = "never"`:
/// every wait is spent in the process.
fn park_after(cx: &Ctxt, arg: &Arg) -> Option<Dur> {
    const HOW: &str = "write the park threshold as a string with a unit, for example `park_after = \"30s\"`, \
                       or `park_after = \"never\"` to wait in the process whatever the wait";
    let lit = match &arg.kind {
        ArgKind::Value(ArgValue::Expr(e)) => match &**e {
            Expr::Lit(syn::ExprLit { lit: Lit::Str(lit), .. }) => Some(lit),
            _ => None,
        },
        _ => None,
    };
    let Some(lit) = lit else {
        cx.error_spanned_by(arg, HOW);
        return None;
    };
    if lit.value() == "never" {
        return Some(Dur::unlimited(lit));
    }
    duration_lit(cx, lit)
}

/// `timeout = "10s"`: a positive duration; `timeout = "none"`: no limit (not even the default).
fn timeout(cx: &Ctxt, arg: &Arg) -> Option<Dur> {
    let lit = match &arg.kind {
        ArgKind::Value(ArgValue::Expr(e)) => match &**e {
            Expr::Lit(syn::ExprLit { lit: Lit::Str(lit), .. }) => Some(lit),
            _ => None,
        },
        _ => None,
    };
    let Some(lit) = lit else {
        cx.error_spanned_by(arg, "write the timeout as a string with a unit, for example `timeout = \"10s\"`");
        return None;
    };
    if lit.value() == "none" {
        return Some(Dur::unlimited(lit));
    }
    let dur = duration_lit(cx, lit)?;
    if dur.millis == 0 {
        cx.error_spanned_by(
            lit,
            "a timeout of zero would fail every attempt; give a positive duration such as \"10s\"",
        );
        return None;
    }
    Some(dur)
}

// ---------------------------------------------------------------------------------------------
// `#[flow(...)]`

/// The options of `#[flow(...)]`.
pub(crate) struct FlowArgs {
    pub(crate) state: Option<Type>,
    pub(crate) name: Option<LitStr>,
    pub(crate) max_calls: Option<u32>,
    pub(crate) retry: Option<Retry>,
    pub(crate) timeout: Option<Dur>,
    /// `on_failure = "finish_running"`: let running methods finish after a failure.
    pub(crate) finish_running: bool,
    /// `park_after = "30s"`: how far away a timer must be for the run to park.
    pub(crate) park_after: Option<Dur>,
}

const FLOW_OPTIONS: &str = "`state = Type`, `name = \"...\"`, `max_calls = N`, `retry(...)`, `timeout = \"...\"`, `on_failure = \"...\"`, `park_after = \"...\"`";

const ON_FAILURE: &str = "write `on_failure = \"cancel_running\"` (the default: a method that fails for good stops the methods \
     still running) or `on_failure = \"finish_running\"` (they finish before the run reports the failure)";

pub(crate) fn flow_args(cx: &Ctxt, tokens: TokenStream) -> FlowArgs {
    let mut out = FlowArgs {
        state: None,
        name: None,
        max_calls: None,
        retry: None,
        timeout: None,
        finish_running: false,
        park_after: None,
    };
    let mut seen = Vec::new();
    let before = cx.count();
    let args = parse_args(cx, tokens.clone());
    let syntax_ok = cx.count() == before;
    for arg in &args {
        let Some(key) = arg.name() else {
            cx.error_spanned_by(
                &arg.path,
                format!("unknown flow option `{}`; valid options: {FLOW_OPTIONS}", arg.shape()),
            );
            continue;
        };
        if !first_time(cx, &mut seen, &key, arg) {
            continue;
        }
        match (key.as_str(), &arg.kind) {
            ("state", ArgKind::Value(ArgValue::Type(ty))) => out.state = Some((**ty).clone()),
            ("name", ArgKind::Value(ArgValue::Expr(e))) => match &**e {
                Expr::Lit(syn::ExprLit { lit: Lit::Str(lit), .. }) if !lit.value().trim().is_empty() => {
                    out.name = Some(lit.clone());
                }
                _ => cx.error_spanned_by(arg, "write the flow's name as a non-empty string: `name = \"content\"`"),
            },
            ("max_calls", ArgKind::Value(v)) => {
                out.max_calls = count(cx, v, arg, "max_calls", "how often one method may run in one run", "")
            }
            ("retry", ArgKind::List(inner)) => out.retry = retry(cx, arg, inner),
            ("timeout", ArgKind::Value(_)) => out.timeout = timeout(cx, arg),
            ("park_after", ArgKind::Value(_)) => out.park_after = park_after(cx, arg),
            ("on_failure", ArgKind::Value(ArgValue::Expr(e))) => match &**e {
                Expr::Lit(syn::ExprLit { lit: Lit::Str(lit), .. }) if lit.value() == "cancel_running" => {}
                Expr::Lit(syn::ExprLit { lit: Lit::Str(lit), .. }) if lit.value() == "finish_running" => {
                    out.finish_running = true;
                }
                _ => cx.error_spanned_by(arg, ON_FAILURE),
            },
            ("state", _) => cx.error_spanned_by(arg, "write the state type as `state = MyState`"),
            ("on_failure", _) => cx.error_spanned_by(arg, ON_FAILURE),
            ("name" | "max_calls" | "retry" | "timeout" | "park_after", _) => {
                cx.error_spanned_by(arg, format!("malformed `{key}`; valid options: {FLOW_OPTIONS}"));
            }
            _ => cx.error_spanned_by(
                &arg.path,
                format!(
                    "unknown flow option `{key}`; {}valid options: {FLOW_OPTIONS}",
                    did_you_mean(&key, &["state", "name", "max_calls", "retry", "timeout", "park_after"])
                ),
            ),
        }
    }
    // After a syntax error the arguments are unknown, so a missing `state` proves nothing.
    if out.state.is_none() && !seen.iter().any(|k| k == "state") && syntax_ok {
        let span = if tokens.is_empty() { Span::call_site() } else { tokens.span() };
        cx.error_at(span, "#[flow] needs the state type of the run: `#[flow(state = MyState)]`");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Method attributes

/// Which of our attributes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum AttrKind {
    Start,
    Listen,
    Router,
    Compensate,
}

impl AttrKind {
    pub(crate) fn from_path(path: &Path) -> Option<Self> {
        let last = path.segments.last()?;
        // `#[start]` or `#[flow_core::start]`; a longer path from another crate is not ours.
        let ours = path.segments.len() == 1
            || path.segments.first().is_some_and(|s| s.ident == "flow_core" || s.ident == "flow_macros");
        if !ours || !matches!(last.arguments, syn::PathArguments::None) {
            return None;
        }
        match last.ident.to_string().as_str() {
            "start" => Some(AttrKind::Start),
            "listen" => Some(AttrKind::Listen),
            "router" => Some(AttrKind::Router),
            "compensate" => Some(AttrKind::Compensate),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            AttrKind::Start => "start",
            AttrKind::Listen => "listen",
            AttrKind::Router => "router",
            AttrKind::Compensate => "compensate",
        }
    }

    fn valid_options(self) -> &'static str {
        match self {
            AttrKind::Start | AttrKind::Listen => "`retry(...)`, `timeout = \"...\"`, `non_critical`",
            AttrKind::Router => {
                "`retry(...)`, `timeout = \"...\"`, `non_critical`, `terminal`, `terminal(Route::Variant, ...)`"
            }
            AttrKind::Compensate => "`retry(...)`, `timeout = \"...\"`",
        }
    }

    fn allows(self, option: &str) -> bool {
        match option {
            "retry" | "timeout" => true,
            "non_critical" => self != AttrKind::Compensate,
            "terminal" => self == AttrKind::Router,
            _ => false,
        }
    }
}

/// `terminal` or `terminal(Route::A, ...)` on a router.
#[derive(Clone)]
pub(crate) enum Terminal {
    /// Every variant no listener handles ends the branch.
    All,
    Variants(Vec<LabelPath>),
}

/// Options on a method attribute.
#[derive(Clone, Default)]
pub(crate) struct MethodOptions {
    pub(crate) retry: Option<Retry>,
    pub(crate) timeout: Option<Dur>,
    pub(crate) non_critical: bool,
    pub(crate) terminal: Option<Terminal>,
}

/// One of our attributes on a method, read.
pub(crate) struct MethodAttr {
    pub(crate) kind: AttrKind,
    /// The attribute itself, for error spans.
    pub(crate) attr: syn::Attribute,
    pub(crate) trigger: Option<TriggerExpr>,
    /// Whether a trigger was written (even one that failed to parse), to avoid follow-up errors.
    pub(crate) trigger_written: bool,
    /// `#[compensate(target)]`.
    pub(crate) target: Option<Ident>,
    pub(crate) options: MethodOptions,
    /// Option names given, for duplicate checks across `#[start] #[router]`.
    pub(crate) option_args: Vec<(String, Path)>,
}

const OPTION_NAMES: [&str; 4] = ["retry", "timeout", "non_critical", "terminal"];

fn is_option(arg: &Arg) -> bool {
    arg.name().is_some_and(|n| OPTION_NAMES.contains(&n.as_str()))
}

fn looks_like_trigger(arg: &Arg) -> bool {
    match arg.kind {
        ArgKind::Flag => true,
        ArgKind::List(_) => matches!(arg.name().as_deref(), Some("or" | "and")),
        ArgKind::Value(_) => false,
    }
}

pub(crate) fn method_attr(cx: &Ctxt, kind: AttrKind, attr: &syn::Attribute) -> MethodAttr {
    let mut out = MethodAttr {
        kind,
        attr: attr.clone(),
        trigger: None,
        trigger_written: false,
        target: None,
        options: MethodOptions::default(),
        option_args: Vec::new(),
    };
    let name = kind.name();
    let args = match &attr.meta {
        syn::Meta::Path(_) => Vec::new(),
        syn::Meta::List(list) => {
            let before = cx.count();
            let args = parse_args(cx, list.tokens.clone());
            // After a syntax error the trigger is unknown, not missing: no follow-up error.
            out.trigger_written = cx.count() != before;
            args
        }
        syn::Meta::NameValue(nv) => {
            cx.error_spanned_by(nv, format!("write `#[{name}(...)]`, not `#[{name} = ...]`"));
            return out;
        }
    };
    let mut rest = args.iter().peekable();
    // The first argument is the trigger unless it is an option.
    if let Some(first) = rest.peek()
        && !is_option(first)
    {
        out.trigger_written = true;
        if kind == AttrKind::Compensate {
            match (&first.kind, first.path.get_ident()) {
                (ArgKind::Flag, Some(ident)) => out.target = Some(ident.clone()),
                _ => cx.error_spanned_by(
                    *first,
                    "`#[compensate(...)]` names the method this one undoes: `#[compensate(save_ticket)]`",
                ),
            }
        } else {
            out.trigger = trigger(cx, first);
        }
        rest.next();
    }
    if kind == AttrKind::Compensate && !out.trigger_written {
        cx.error_spanned_by(attr, "`#[compensate]` needs the method it undoes: `#[compensate(save_ticket)]`");
    }
    let options: Vec<&str> = OPTION_NAMES.into_iter().filter(|o| kind.allows(o)).collect();
    for arg in rest {
        if !is_option(arg) {
            let suggestion = arg.name().map(|n| did_you_mean(&n, &options)).unwrap_or_default();
            if looks_like_trigger(arg) && kind != AttrKind::Compensate {
                // A bare name may be a second trigger or a misspelt flag (`non_critcal`).
                let option = if suggestion.is_empty() {
                    String::new()
                } else {
                    format!("; if `{}` is meant as an option, {}", arg.shape(), suggestion.trim_end())
                };
                cx.error_spanned_by(
                    arg,
                    format!(
                        "`#[{name}]` takes one trigger, then options; to run on several triggers write \
                         `or(a, b)` (any of them) or `and(a, b)` (all of them){option}"
                    ),
                );
            } else {
                cx.error_spanned_by(
                    &arg.path,
                    format!(
                        "unknown option `{}` on `#[{name}]`; {suggestion}valid options: {}",
                        arg.shape(),
                        kind.valid_options()
                    ),
                );
            }
            continue;
        }
        let key = arg.name().unwrap_or_default();
        if !kind.allows(&key) {
            let hint = if key == "terminal" {
                "`terminal` only applies to `#[router]`".to_owned()
            } else {
                format!("valid options: {}", kind.valid_options())
            };
            cx.error_spanned_by(&arg.path, format!("`{key}` is not an option of `#[{name}]`; {hint}"));
            continue;
        }
        if out.option_args.iter().any(|(k, _)| *k == key) {
            cx.error_spanned_by(&arg.path, format!("duplicate option `{key}`: give it once"));
            continue;
        }
        out.option_args.push((key.clone(), arg.path.clone()));
        match (key.as_str(), &arg.kind) {
            ("retry", ArgKind::List(inner)) => out.options.retry = retry(cx, arg, inner),
            ("timeout", ArgKind::Value(_)) => out.options.timeout = timeout(cx, arg),
            ("non_critical", ArgKind::Flag) => out.options.non_critical = true,
            ("terminal", ArgKind::Flag) => out.options.terminal = Some(Terminal::All),
            ("terminal", ArgKind::List(inner)) => {
                let mut variants = Vec::new();
                for v in parse_args(cx, inner.clone()) {
                    match (&v.kind, LabelPath::new(&v.path)) {
                        (ArgKind::Flag, Some(label)) if v.path.segments.len() >= 2 => variants.push(label),
                        _ => cx.error_spanned_by(
                            &v,
                            "`terminal(...)` lists route variants, `terminal(Route::Done, Route::Failed)`; \
                             a bare `terminal` ends every variant no listener handles",
                        ),
                    }
                }
                out.options.terminal = Some(Terminal::Variants(variants));
            }
            ("retry", _) => cx.error_spanned_by(arg, format!("malformed `retry`; write {RETRY_HELP}")),
            ("timeout", _) => cx.error_spanned_by(arg, "write the timeout as `timeout = \"10s\"`"),
            _ => cx.error_spanned_by(arg, format!("`{key}` takes no value: write `{key}` alone")),
        }
    }
    out
}
