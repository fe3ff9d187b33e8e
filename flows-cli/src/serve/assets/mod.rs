//! The dashboard's static files, compiled into the binary: no CDN, no build step.

const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// An asset's body and content type, by file name.
pub fn get(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "app.js" => Some((APP_JS, "text/javascript; charset=utf-8")),
        "app.css" => Some((APP_CSS, "text/css; charset=utf-8")),
        _ => None,
    }
}
