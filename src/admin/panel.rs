//! The browser panel's files, embedded in the binary so the panel works offline (no CDN).
//!
//! Owns: which path serves which file, with its content type. Does not own: the panel's
//! behaviour (the files themselves, in `panel/`) or the API it calls (`http`).

use crate::admin::http::Reply;

const INDEX: &str = include_str!("panel/index.html");
const APP_JS: &str = include_str!("panel/app.js");
const APP_CSS: &str = include_str!("panel/app.css");

/// The file at `path`, if the panel has one there.
pub fn file(path: &str) -> Option<Reply> {
    Some(match path {
        "/admin/" | "/admin/index.html" => {
            Reply::file("text/html; charset=utf-8", INDEX.as_bytes())
        }
        "/admin/app.js" => Reply::file("text/javascript; charset=utf-8", APP_JS.as_bytes()),
        "/admin/app.css" => Reply::file("text/css; charset=utf-8", APP_CSS.as_bytes()),
        _ => return None,
    })
}
