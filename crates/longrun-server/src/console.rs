//! The web console (SPEC §8): `GET /` serves a page that shows the
//! operations under a parent, filtered with the same AIP-160 filter as List,
//! newest first, each with its state (coloured), progress bar, verb, target
//! and times, and a detail panel with the full `Operation` JSON and its
//! standard view, and Cancel and Delete buttons.
//!
//! The page is three static files from `console/`, embedded in the binary
//! (no build step, no framework, nothing loaded from elsewhere). Everything
//! it shows comes from the public REST API, as any client would call it:
//!
//! - It opens `GET /v1/{parent}/operations:watch` (Server-Sent Events) and
//!   applies the snapshot and then every change as it commits, so the table
//!   is live without reloading. It reads the stream with `fetch` rather
//!   than `EventSource`, which cannot send an `Authorization` header, keeps
//!   the last event id and resumes from it (`Last-Event-ID`) after a
//!   dropped connection or an `end` event, with backoff.
//! - Cancel and Delete are the standard `:cancel` and `DELETE` calls: the
//!   console has no rights of its own. With `--tokens`, a 401 makes the page
//!   ask for a token, which it keeps in the tab's `sessionStorage` and sends
//!   as `Authorization: Bearer`; the server's roles decide what it may see
//!   and do, and a refusal (403) is shown as the server worded it.
//!
//! Names, metadata and messages are written by producers, so the page puts
//! them into the document only as text, and the policy below forbids inline
//! scripts and styles and any other origin: a payload that slipped through
//! as markup still could not run. Mutating calls are same-origin JSON, which
//! the CSRF guard (`rest::guard`) lets through.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};

/// Only the console's own files, no inline code, no framing, no forms.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// One embedded file and how it is served.
#[derive(Debug)]
struct Asset {
    body: &'static str,
    content_type: &'static str,
    /// A validator for `no-cache` revalidation: a reload after an upgrade
    /// gets the new files, and otherwise costs a 304.
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let hex: String = digest[..12].iter().map(|byte| format!("{byte:02x}")).collect();
        // Hex digits in quotes are always a valid header value.
        let etag = HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"console\""));
        Self {
            body,
            content_type,
            etag,
        }
    }
}

static INDEX: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("../console/index.html"), "text/html; charset=utf-8"));
static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("../console/console.js"), "text/javascript; charset=utf-8"));
static STYLE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("../console/console.css"), "text/css; charset=utf-8"));

/// `/` and the two files it loads (GET, and HEAD through axum). Every
/// other path stays with the REST router and its JSON errors.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve(&INDEX, &headers) }))
        .route(
            "/console/console.js",
            get(|headers: HeaderMap| async move { serve(&SCRIPT, &headers) }),
        )
        .route(
            "/console/console.css",
            get(|headers: HeaderMap| async move { serve(&STYLE, &headers) }),
        )
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == "*" || tag.trim() == asset.etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::ETAG, asset.etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_revalidate_by_etag() {
        let first = serve(&SCRIPT, &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve(&SCRIPT, &again).status(), StatusCode::NOT_MODIFIED);
        assert_ne!(INDEX.etag, SCRIPT.etag, "each file has its own tag");
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        let page = INDEX.body;
        assert!(page.contains("src=\"/console/console.js\""));
        assert!(page.contains("href=\"/console/console.css\""));
        // The policy forbids inline code; the page must not rely on it.
        assert!(!page.contains("<script>") && !page.contains("style=") && !page.contains("<style"));
        let inline_handler = page.split(" on").skip(1).any(|rest| {
            let attribute: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !attribute.is_empty() && rest[attribute.len()..].starts_with('=')
        });
        assert!(!inline_handler, "no inline event handlers");
    }
}
