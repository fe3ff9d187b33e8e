//! Durations written as string literals in options: `"250ms"`, `"10s"`, `"1m30s"`, `"1h"`,
//! read by `humantime` (the grammar `flows prune --older-than` and most Rust tools accept) at
//! compile time, so a malformed one is a compile error on the literal.

use syn::LitStr;

/// How a duration literal must look, for error messages.
pub(crate) const DURATION_HELP: &str = "write a number and a unit such as ms, s, m, h or d, or several (for example \"250ms\", \"10s\", \"1m30s\", \"2h\")";

/// A duration read from a literal, kept with the literal for error spans.
#[derive(Clone)]
pub(crate) struct Dur {
    pub(crate) millis: u64,
    pub(crate) lit: LitStr,
}

impl Dur {
    /// `"none"` where a limit is asked for: no limit at all.
    pub(crate) fn unlimited(lit: &LitStr) -> Self {
        Dur { millis: u64::MAX, lit: lit.clone() }
    }

    pub(crate) fn is_unlimited(&self) -> bool {
        self.millis == u64::MAX
    }
}

/// Parses a duration literal into milliseconds.
pub(crate) fn parse(lit: &LitStr) -> Result<Dur, String> {
    let text = lit.value();
    if text.trim().is_empty() {
        return Err(format!("empty duration: {DURATION_HELP}"));
    }
    if text.trim() != text {
        return Err(format!("duration `{text}` has spaces around it: {DURATION_HELP}"));
    }
    let duration = humantime::parse_duration(&text).map_err(|e| match e {
        humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
            format!("duration `{text}` has no unit: {DURATION_HELP}")
        }
        humantime::DurationError::UnknownUnit { unit, .. } => {
            format!("invalid duration `{text}`: unknown unit `{unit}`; {DURATION_HELP}")
        }
        humantime::DurationError::NumberOverflow => format!("duration `{text}` is too large"),
        _ => format!("invalid duration `{text}`: {DURATION_HELP}"),
    })?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("duration `{text}` is finer than a millisecond, which is the finest step a flow keeps"));
    }
    let millis = u64::try_from(duration.as_millis()).map_err(|_| format!("duration `{text}` is too large"))?;
    if millis == u64::MAX {
        return Err(format!("duration `{text}` is too large"));
    }
    Ok(Dur { millis, lit: lit.clone() })
}

#[cfg(test)]
mod tests {
    use super::parse;
    use proc_macro2::Span;
    use syn::LitStr;

    fn ms(s: &str) -> Result<u64, String> {
        parse(&LitStr::new(s, Span::call_site())).map(|d| d.millis)
    }

    #[test]
    fn units() {
        assert_eq!(ms("250ms"), Ok(250));
        assert_eq!(ms("10s"), Ok(10_000));
        assert_eq!(ms("5m"), Ok(300_000));
        assert_eq!(ms("1h"), Ok(3_600_000));
        assert_eq!(ms("0s"), Ok(0));
        assert_eq!(ms("1m30s"), Ok(90_000));
        assert_eq!(ms("1h 30m"), Ok(5_400_000));
        assert_eq!(ms("2d"), Ok(172_800_000));
        assert_eq!(ms("1.5s"), Ok(1_500));
    }

    #[test]
    fn errors() {
        for bad in ["", "10x", "s", "10", " 10s", "-1s", "99999999999999999999h", "10us", "1ms500us"] {
            assert!(ms(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(ms("10"), Err(format!("duration `10` has no unit: {}", super::DURATION_HELP)));
        assert!(ms("5 parsecs").is_err_and(|e| e.contains("unknown unit `parsecs`")));
    }
}
