//! Who may use the dashboard, and which requests may change anything.
//!
//! - Bound to loopback without a token, only this machine reaches it; the Host header must
//!   then name loopback too, so a web page whose domain was pointed at 127.0.0.1 (DNS
//!   rebinding) cannot read it.
//! - With a token, every request but the sign-in page and the static assets needs it: as
//!   `Authorization: Bearer TOKEN`, or through the sign-in form, which sets an HttpOnly,
//!   SameSite=Strict cookie holding a session secret of this process (never the token itself,
//!   so a leaked cookie dies with the server and does not reveal the token). Secrets are
//!   compared in constant time.
//! - Every action is a POST carrying the process's CSRF token (a random secret made at start,
//!   embedded in the forms, compared in constant time), and a browser's Origin, when sent,
//!   must be the dashboard's own.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};
use rand::RngCore;
use subtle::ConstantTimeEq;

/// The cookie the sign-in form sets: it holds the process's session secret.
pub const SESSION_COOKIE: &str = "flows_session";

/// Whether serving on `bind` is allowed with or without a token; the refusal says what to do.
pub fn check_bind(bind: IpAddr, token: Option<&str>) -> Result<(), String> {
    if token.is_some_and(|t| t.trim().is_empty()) {
        return Err("the token is empty: pass --token with a secret of your own (or set FLOWS_TOKEN)".into());
    }
    if bind.is_loopback() || token.is_some() {
        return Ok(());
    }
    Err(format!(
        "refusing to serve on {bind} without a token: anyone who reaches that address could answer, cancel \
         and retry runs. Pass --token SECRET (or set FLOWS_TOKEN), or bind 127.0.0.1 (the default)"
    ))
}

/// Equal strings, compared without revealing where they differ.
pub fn same_secret(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// A fresh random secret, as 64 hex digits.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token a request carries in its Authorization header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// A cookie's value.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Whether a request may see the dashboard: no token configured, or the token presented as a
/// bearer, or the session cookie the sign-in form gave out.
pub fn authorized(headers: &HeaderMap, token: Option<&str>, session: &str) -> bool {
    match token {
        None => true,
        Some(expected) => {
            bearer_token(headers).is_some_and(|given| same_secret(given, expected))
                || cookie(headers, SESSION_COOKIE).is_some_and(|given| same_secret(&given, session))
        }
    }
}

/// The host part of a Host header or an origin's authority (`[::1]:80` -> `[::1]`).
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_once(']').map_or(authority, |(h, _)| &authority[..=h.len()]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Whether the Host header is acceptable: any host once a token guards the dashboard; a
/// loopback name (or the bound address) otherwise.
pub fn host_allowed(headers: &HeaderMap, bound: SocketAddr, token: Option<&str>) -> bool {
    if token.is_some() {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = host_name(host).trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback() || ip == bound.ip())
}

/// Why a state-changing request is refused, if it is: a missing or wrong CSRF token, or a
/// browser Origin other than the dashboard's own.
pub fn check_action(headers: &HeaderMap, csrf_given: Option<&str>, csrf: &str) -> Result<(), String> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let origin = origin.to_str().unwrap_or_default();
        let authority = origin.split_once("://").map_or("", |(_, a)| a);
        if host.is_empty() || !authority.eq_ignore_ascii_case(host) {
            return Err(format!(
                "this form was sent from another site ({origin}), so it was ignored; open the dashboard itself and \
                 use its buttons"
            ));
        }
    }
    match csrf_given {
        Some(given) if same_secret(given, csrf) => Ok(()),
        Some(_) => Err("this form's security token is not this dashboard's (was the server restarted?); reload \
                        the page and try again"
            .into()),
        None => Err("this form has no security token; reload the page and use its buttons".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")));
        }
        h
    }

    #[test]
    fn a_non_loopback_bind_needs_a_token() {
        let any: IpAddr = [0, 0, 0, 0].into();
        let e = check_bind(any, None).err().unwrap_or_default();
        assert!(e.contains("without a token") && e.contains("--token") && e.contains("FLOWS_TOKEN"), "{e}");
        assert!(check_bind(any, Some("s3cret")).is_ok());
        assert!(check_bind([127, 0, 0, 1].into(), None).is_ok());
        assert!(check_bind("::1".parse().unwrap_or(any), None).is_ok());
        assert!(check_bind(any, Some("  ")).is_err(), "an empty token guards nothing");
    }

    #[test]
    fn access_comes_from_the_bearer_token_or_the_session_cookie() {
        let session = random_secret();
        assert!(authorized(&headers(&[]), None, &session));
        assert!(!authorized(&headers(&[]), Some("t0k"), &session));
        assert!(authorized(&headers(&[(header::AUTHORIZATION, "Bearer t0k")]), Some("t0k"), &session));
        assert!(!authorized(&headers(&[(header::AUTHORIZATION, "Bearer t0")]), Some("t0k"), &session));
        let cookie_of = |value: &str| format!("a=b; {SESSION_COOKIE}={value}");
        assert!(authorized(&headers(&[(header::COOKIE, &cookie_of(&session))]), Some("t0k"), &session));
        assert!(!authorized(&headers(&[(header::COOKIE, &cookie_of("nope"))]), Some("t0k"), &session));
        // The cookie carries the session, not the token: the token in a cookie opens nothing.
        assert!(!authorized(&headers(&[(header::COOKIE, &cookie_of("t0k"))]), Some("t0k"), &session));
    }

    #[test]
    fn without_a_token_only_loopback_hosts_are_served() {
        let bound: SocketAddr = ([127, 0, 0, 1], 7070).into();
        for ok in ["127.0.0.1:7070", "localhost:7070", "[::1]:7070", "localhost"] {
            assert!(host_allowed(&headers(&[(header::HOST, ok)]), bound, None), "{ok}");
        }
        for bad in ["evil.example:7070", "evil.example", "10.0.0.1:7070"] {
            assert!(!host_allowed(&headers(&[(header::HOST, bad)]), bound, None), "{bad}");
        }
        assert!(!host_allowed(&headers(&[]), bound, None));
        assert!(host_allowed(&headers(&[(header::HOST, "evil.example")]), bound, Some("t")));
    }

    #[test]
    fn actions_need_the_csrf_token_and_their_own_origin() {
        let csrf = random_secret();
        assert_eq!(csrf.len(), 64);
        assert_ne!(csrf, random_secret());
        let own = headers(&[(header::HOST, "127.0.0.1:7070"), (header::ORIGIN, "http://127.0.0.1:7070")]);
        assert!(check_action(&own, Some(&csrf), &csrf).is_ok());
        assert!(check_action(&own, None, &csrf).is_err());
        assert!(check_action(&own, Some("0000"), &csrf).is_err());
        let foreign = headers(&[(header::HOST, "127.0.0.1:7070"), (header::ORIGIN, "http://evil.example")]);
        let e = check_action(&foreign, Some(&csrf), &csrf).err().unwrap_or_default();
        assert!(e.contains("another site"), "{e}");
        // Scripts send no Origin; the token still has to be right.
        assert!(check_action(&headers(&[(header::HOST, "h")]), Some(&csrf), &csrf).is_ok());
    }
}
