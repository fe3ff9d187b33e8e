//! Route enums: what a router returns. `#[derive(Route)]` lets `#[flow]` check, while your
//! crate compiles, that every variant of a router's enum is handled by a listener or declared
//! terminal, and report one that is not in the library's own words.

/// An enum a router returns, with its variants known to the compiler. Derive it:
/// `#[derive(Route)]` (in the prelude), beside `Serialize` and `Deserialize`.
///
/// ```
/// use flow_core::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Copy, Debug, Serialize, Deserialize, Route)]
/// enum Ticket { Bug, Question { urgent: bool }, Spam }
///
/// assert_eq!(<Ticket as Route>::VARIANTS, ["Bug", "Question", "Spam"]);
/// assert_eq!(Ticket::Question { urgent: true }.variant(), "Question");
/// ```
///
/// A router whose enum has a variant that no listener handles and that is not declared
/// terminal does not compile:
///
/// ```compile_fail,E0080
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
/// #[derive(serde::Serialize, serde::Deserialize, Route)]
/// enum Ticket { Bug, Spam }
/// struct Triage;
///
/// #[flow(state = S)]
/// impl Triage {
///     #[start]
///     #[router] // error: route `Ticket::Spam` of router `classify` is not handled: ...
///     async fn classify(&self) -> Result<Ticket> { Ok(Ticket::Bug) }
///
///     #[listen(Ticket::Bug)]
///     async fn file_bug(&self) -> Result<()> { Ok(()) }
/// }
/// ```
///
/// The check runs beside the flow's impl block, where the impl's type parameters are not in
/// scope: in a generic flow whose route type names them (`-> Result<Pick<T>>` in
/// `impl<T> MyFlow<T>`), a router none of whose routes is handled is still refused by
/// `#[flow]`, but a single unhandled variant is reported by rustc's own exhaustiveness check
/// ("non-exhaustive patterns"). A route type that does not name them is checked as above.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a route: a router returns an enum that derives `Route` (or an `Option` of one)",
    label = "a router's return type",
    note = "add `#[derive(Route)]` to the enum (it is in `flow_core::prelude`); to route on a string, a number or a \
            struct, return an enum of the outcomes instead"
)]
pub trait Route {
    /// The names of the enum's variants, in declaration order.
    const VARIANTS: &'static [&'static str];

    /// The name of this value's variant.
    fn variant(&self) -> &'static str;
}

/// Whether `name` is one of `names`.
const fn listed(name: &str, names: &[&str]) -> bool {
    let mut i = 0;
    while i < names.len() {
        if same(name.as_bytes(), names[i].as_bytes()) {
            return true;
        }
        i += 1;
    }
    false
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The error text for the variants of `route` (named `variants`) that router `router` neither
/// listens to nor ends (`handled`), or `None` when every one is handled. A `const fn`, so that
/// `#[flow]` checks each router while the user's crate compiles and panics with this text,
/// which rustc then reports on the router's return type.
#[doc(hidden)]
pub const fn unhandled_routes(route: &str, router: &str, variants: &[&str], handled: &[&str]) -> Option<Message> {
    let mut list = Message::new();
    let mut count = 0usize;
    let mut first = "";
    let mut i = 0usize;
    while i < variants.len() {
        if !listed(variants[i], handled) {
            if count == 0 {
                first = variants[i];
            } else {
                list = list.push(", ");
            }
            list = list.push("`").push(route).push("::").push(variants[i]).push("`");
            count += 1;
        }
        i += 1;
    }
    if count == 0 {
        return None;
    }
    let listed_text = match list.as_str() {
        Some(text) => text,
        None => "",
    };
    Some(
        Message::new()
            .push(if count == 1 { "route " } else { "routes " })
            .push(listed_text)
            .push(" of the router `")
            .push(router)
            .push(if count == 1 {
                "` is not handled: listen to it with `#[listen("
            } else {
                "` are not handled: listen to each on the method that should run next, as in `#[listen("
            })
            .push(route)
            .push("::")
            .push(first)
            .push(if count == 1 { ")]` on the method that should run next" } else { ")]`" })
            .push(", or end the branch with `terminal(")
            .push(route)
            .push("::")
            .push(first)
            .push(")` on `#[router]`"),
    )
}

/// The error text for a listener (`listener`) that listens to router `router` by its name (in its
/// trigger `trigger`) while no method listens to any of the router's routes: it names the
/// variants of `route` (`variants`) it can listen to instead. A `const fn`, for the same reason
/// as [`unhandled_routes`]; `#[flow]` panics with this text on the listener's name.
#[doc(hidden)]
pub const fn listened_by_name(listener: &str, router: &str, trigger: &str, route: &str, variants: &[&str]) -> Message {
    let mut text =
        Message::new().push("`").push(listener).push("` listens to the router `").push(router).push("` by its name");
    if !same(trigger.as_bytes(), router.as_bytes()) {
        text = text.push(" (in `").push(trigger).push("`)");
    }
    text = text
        .push(", and no method listens to one of its routes, so none of them is handled; a router's listeners listen to the variants it returns: ");
    let mut i = 0usize;
    while i < variants.len() {
        if i > 0 {
            text = text.push(if i + 1 == variants.len() { " or " } else { ", " });
        }
        text = text.push("`#[listen(").push(route).push("::").push(variants[i]).push(")]`");
        i += 1;
    }
    let first = if variants.is_empty() { "Variant" } else { variants[0] };
    text.push("; end a route no method handles with `terminal(")
        .push(route)
        .push("::")
        .push(first)
        .push(")` on `#[router]`")
}

/// The message of an unhandled-route error, built while the user's crate compiles.
#[doc(hidden)]
#[derive(Debug)]
pub struct Message {
    buf: [u8; 1024],
    len: usize,
}

impl Message {
    const fn new() -> Self {
        Message { buf: [0; 1024], len: 0 }
    }

    /// Appends `text`; what does not fit is cut at a character boundary and ends in `...`.
    const fn push(mut self, text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if self.len + 4 > self.buf.len() {
                while self.len > 0 && (self.buf[self.len - 1] & 0xC0) == 0x80 {
                    self.len -= 1;
                }
                if self.len > 0 && self.buf[self.len - 1] >= 0xC0 {
                    self.len -= 1;
                }
                self.buf[self.len] = b'.';
                self.buf[self.len + 1] = b'.';
                self.buf[self.len + 2] = b'.';
                self.len += 3;
                return self;
            }
            self.buf[self.len] = bytes[i];
            self.len += 1;
            i += 1;
        }
        self
    }

    /// The text; `None` cannot happen for text pushed whole.
    #[doc(hidden)]
    pub const fn as_str(&self) -> Option<&str> {
        let (head, _) = self.buf.split_at(self.len);
        match core::str::from_utf8(head) {
            Ok(s) => Some(s),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_compared_whole() {
        assert!(listed("Spam", &["Bug", "Spam"]));
        assert!(!listed("Spa", &["Bug", "Spam"]));
        assert!(!listed("Spam", &[]));
    }

    #[test]
    fn unhandled_routes_are_named_with_the_fixes() {
        assert!(unhandled_routes("Ticket", "triage", &["Bug", "Spam"], &["Bug", "Spam"]).is_none());
        let one = unhandled_routes("Ticket", "triage", &["Bug", "Spam"], &["Bug"]).expect("Spam is unhandled");
        assert_eq!(
            one.as_str(),
            Some(
                "route `Ticket::Spam` of the router `triage` is not handled: listen to it with \
                 `#[listen(Ticket::Spam)]` on the method that should run next, or end the branch with \
                 `terminal(Ticket::Spam)` on `#[router]`"
            )
        );
        let two = unhandled_routes("Ticket", "triage", &["Bug", "Question", "Spam"], &["Bug"]).expect("two unhandled");
        assert!(
            two.as_str().is_some_and(|t| t.starts_with(
                "routes `Ticket::Question`, `Ticket::Spam` of the router `triage` are not handled: listen to each on \
                 the method that should run next, as in `#[listen(Ticket::Question)]`, or end the branch with \
                 `terminal(Ticket::Question)`"
            )),
            "{two:?}"
        );
    }

    #[test]
    fn a_listener_on_the_router_name_is_shown_every_route() {
        let m = listened_by_name("handle", "classify", "classify", "Ticket", &["Bug", "Question", "Spam"]);
        assert_eq!(
            m.as_str(),
            Some(
                "`handle` listens to the router `classify` by its name, and no method listens to one of its \
                 routes, so none of them is handled; a router's listeners listen to the variants it returns: \
                 `#[listen(Ticket::Bug)]`, `#[listen(Ticket::Question)]` or `#[listen(Ticket::Spam)]`; end a \
                 route no method handles with `terminal(Ticket::Bug)` on `#[router]`"
            )
        );
        let or = listened_by_name("log", "classify", "or(begin, classify)", "Ticket", &["Bug"]);
        assert!(
            or.as_str().is_some_and(|t| t
                .starts_with("`log` listens to the router `classify` by its name (in `or(begin, classify)`), and")
                && t.contains(": `#[listen(Ticket::Bug)]`; end")),
            "{or:?}"
        );
    }

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary() {
        let long = "é".repeat(600);
        let m = Message::new().push("start ").push(&long);
        let text = m.as_str().expect("valid UTF-8");
        assert!(text.starts_with("start é"));
        assert!(text.ends_with("..."));
        assert!(text.len() <= 1024);
        assert_eq!(Message::new().push("a").push("b").as_str(), Some("ab"));
    }
}
