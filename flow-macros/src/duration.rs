//! Durations written as string literals in options: `"250ms"`, `"10s"`, `"5m"`, `"1h"`.

use syn::LitStr;

/// How a duration literal must look, for error messages.
pub(crate) const DURATION_HELP: &str =
    "write a whole number followed by a unit: ms, s, m or h (for example \"250ms\", \"10s\", \"5m\", \"1h\")";

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
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if text.is_empty() {
        return Err(format!("empty duration: {DURATION_HELP}"));
    }
    if digits.is_empty() {
        return Err(format!("invalid duration `{text}`: {DURATION_HELP}"));
    }
    let factor: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("duration `{text}` has no unit: {DURATION_HELP}")),
        _ => return Err(format!("invalid duration `{text}`: unknown unit `{unit}`; {DURATION_HELP}")),
    };
    let too_large = || format!("duration `{text}` is too large");
    let n: u64 = digits.parse().map_err(|_| too_large())?;
    let millis = n.checked_mul(factor).ok_or_else(too_large)?;
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
    }

    #[test]
    fn errors() {
        for bad in ["", "10x", "s", "10", "1.5s", " 10s", "10 s", "-1s", "99999999999999999999h"] {
            assert!(ms(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
