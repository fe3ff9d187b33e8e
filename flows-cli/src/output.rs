//! Tables, colours and times for people; JSON helpers for scripts.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flow_core::store::{RunStatus, StepStatus};

use crate::cli::ColorChoice;

/// Whether to colour: asked for, or `auto` on a terminal with no `NO_COLOR` and a `TERM` that
/// is not `dumb`.
pub fn use_color(choice: ColorChoice, is_terminal: bool, no_color: Option<&str>, term: Option<&str>) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        // https://no-color.org: set and not empty means no colour.
        ColorChoice::Auto => is_terminal && no_color.is_none_or(str::is_empty) && term != Some("dumb"),
    }
}

/// [`use_color`] for this process's standard output and environment.
pub fn color_for_stdout(choice: ColorChoice) -> bool {
    let no_color = std::env::var("NO_COLOR").ok();
    let term = std::env::var("TERM").ok();
    use_color(choice, std::io::stdout().is_terminal(), no_color.as_deref(), term.as_deref())
}

/// An ANSI style, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paint {
    Plain,
    Bold,
    Dim,
    Red,
    Green,
    Yellow,
    Blue,
    Magenta,
}

impl Paint {
    fn code(self) -> &'static str {
        match self {
            Paint::Plain => "",
            Paint::Bold => "1",
            Paint::Dim => "2",
            Paint::Red => "31",
            Paint::Green => "32",
            Paint::Yellow => "33",
            Paint::Blue => "34",
            Paint::Magenta => "35",
        }
    }

    pub fn of_run(status: RunStatus) -> Paint {
        match status {
            RunStatus::Queued | RunStatus::Running => Paint::Blue,
            RunStatus::Paused => Paint::Yellow,
            RunStatus::Completed => Paint::Green,
            RunStatus::Failed => Paint::Red,
            RunStatus::Escalated => Paint::Magenta,
            RunStatus::Cancelled => Paint::Dim,
            RunStatus::Compensated => Paint::Magenta,
        }
    }

    pub fn of_step(status: StepStatus) -> Paint {
        match status {
            StepStatus::Ready => Paint::Blue,
            StepStatus::Completed => Paint::Green,
            StepStatus::Failed => Paint::Red,
            StepStatus::Paused => Paint::Yellow,
            StepStatus::Skipped | StepStatus::Compensated => Paint::Magenta,
        }
    }
}

/// Paints text when colour is on.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn paint(self, paint: Paint, text: &str) -> String {
        if !self.color || paint == Paint::Plain || text.is_empty() {
            return text.to_string();
        }
        format!("\x1b[{}m{text}\x1b[0m", paint.code())
    }
}

/// A table whose columns are as wide as their widest cell; only the cells are painted, after
/// padding, so escape codes never shift a column.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<(String, Paint)>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table { headers: headers.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<(String, Paint)>) {
        self.rows.push(cells);
    }

    pub fn render(&self, style: Style, indent: &str) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, (text, _)) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(width(text));
                }
            }
        }
        let mut out = String::new();
        let mut line = |cells: Vec<(String, Paint)>| {
            let mut text = String::from(indent);
            let last = cells.len().saturating_sub(1);
            for (i, (cell, paint)) in cells.into_iter().enumerate() {
                let pad = if i == last { 0 } else { widths.get(i).copied().unwrap_or(0) - width(&cell) + 2 };
                text.push_str(&style.paint(paint, &cell));
                text.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(self.headers.iter().map(|h| (h.to_string(), Paint::Bold)).collect());
        for row in &self.rows {
            line(row.clone());
        }
        out
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn system_time(ms: i64) -> SystemTime {
    match u64::try_from(ms) {
        Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => UNIX_EPOCH,
    }
}

/// An RFC 3339 time in UTC with milliseconds, for JSON: `2026-12-06T20:02:28.123Z`.
pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(system_time(ms)).to_string()
}

/// An RFC 3339 time to the second, for tables.
pub fn time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(system_time(ms)).to_string()
}

/// How long ago, in the largest unit that fits: `45s`, `12m`, `3h`, `9d`.
pub fn age(ms: i64, now: i64) -> String {
    let secs = (now - ms).max(0) / 1000;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A time and how long ago it was: `2026-12-06T20:02:28Z (3m ago)`.
pub fn when(ms: i64, now: i64) -> String {
    format!("{} ({} ago)", time(ms), age(ms, now))
}

/// The first line of a text, cut to `max` characters with an ellipsis.
pub fn line(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or("");
    let mut out: String = first.chars().take(max).collect();
    if first.chars().count() > max || text.lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_color(ColorChoice::Auto, true, None, Some("xterm-256color")));
        assert!(!use_color(ColorChoice::Auto, false, None, None), "not a terminal");
        assert!(!use_color(ColorChoice::Auto, true, Some("1"), None), "NO_COLOR set");
        assert!(use_color(ColorChoice::Auto, true, Some(""), None), "NO_COLOR empty counts as unset");
        assert!(!use_color(ColorChoice::Auto, true, None, Some("dumb")));
        assert!(use_color(ColorChoice::Always, false, Some("1"), None), "asked for");
        assert!(!use_color(ColorChoice::Never, true, None, None));
    }

    #[test]
    fn tables_align_columns_whatever_the_colour() {
        let mut table = Table::new(&["ID", "STATUS", "NOTE"]);
        table.row(vec![("a".into(), Paint::Plain), ("completed".into(), Paint::Green), ("é".into(), Paint::Plain)]);
        table.row(vec![("bbbb".into(), Paint::Plain), ("failed".into(), Paint::Red), (String::new(), Paint::Plain)]);
        let plain = table.render(Style { color: false }, "");
        assert_eq!(plain, "ID    STATUS     NOTE\na     completed  é\nbbbb  failed\n");
        let colored = table.render(Style { color: true }, "");
        assert!(colored.contains("\x1b[32mcompleted\x1b[0m  é"), "{colored:?}");
        let stripped = colored.replace("\x1b[1m", "").replace("\x1b[32m", "").replace("\x1b[31m", "");
        assert_eq!(stripped.replace("\x1b[0m", ""), plain);
    }

    #[test]
    fn times_read_well() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(time(1_700_000_000_123), "2023-11-14T22:13:20Z");
        let now = 1_700_000_000_000;
        assert_eq!(age(now - 5_000, now), "5s");
        assert_eq!(age(now - 5 * 60_000, now), "5m");
        assert_eq!(age(now - 3 * 3_600_000, now), "3h");
        assert_eq!(age(now - 9 * 86_400_000, now), "9d");
        assert_eq!(age(now + 5_000, now), "0s", "a clock a little ahead is not negative");
        assert_eq!(line("first line\nsecond", 50), "first line…");
        assert_eq!(line("abcdef", 3), "abc…");
        assert_eq!(line("abc", 3), "abc");
    }
}
