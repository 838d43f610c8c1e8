//! What browsers and proxies may not do to the server.
//!
//! - **Cross-site requests.** A web page can make a browser send a `POST`
//!   to any address, the user's loopback included, without asking the
//!   server first, as long as it looks like a form (`text/plain`, form
//!   encodings). So a `POST`, `PUT`, `PATCH` or `DELETE` is refused when the
//!   browser says it comes from another site (`Sec-Fetch-Site`, `Origin`),
//!   unless that origin is allowed, and a body in a form's content type is
//!   refused from anyone. Google's clients and `curl --json` send JSON and
//!   no `Origin`, and a body-less `POST` (the discovery client's cancel)
//!   still works.
//! - **DNS rebinding.** A page on `evil.example` whose name resolves to
//!   127.0.0.1 reaches a loopback server as a same-site request with `Host:
//!   evil.example`. A server listening on loopback therefore answers only
//!   the host names that mean the machine itself, plus any allowed ones.
//! - **Proxies.** `X-Forwarded-Proto` and `X-Forwarded-Host` say what URL a
//!   client used, but anyone can send them; they are believed only when
//!   the proxy is trusted by configuration.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::{Error, RequestId, Service};
use longrun_types::Code;

/// Which `Host` headers the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hosts {
    /// Any (a server on a public address, behind its own name or many).
    Any,
    /// `localhost`, `127.0.0.1` and `[::1]` (any port), and these names.
    Loopback(Vec<String>),
    /// Only these names (any port).
    Only(Vec<String>),
}

/// How the REST surface treats browsers and proxies.
#[derive(Debug, Clone)]
pub struct Exposure {
    pub hosts: Hosts,
    /// Origins (`https://console.example.com`) whose pages may make
    /// changing calls, besides the server's own.
    pub allowed_origins: Vec<String>,
    /// Believe `X-Forwarded-Proto` and `X-Forwarded-Host` (the server is
    /// behind a proxy that sets them).
    pub trust_forwarded: bool,
    /// The server itself speaks TLS, so its own URLs are `https`.
    pub tls: bool,
}

impl Default for Exposure {
    /// What a server on loopback needs: loopback host names only, no other
    /// origins, no proxy.
    fn default() -> Self {
        Self {
            hosts: Hosts::Loopback(Vec::new()),
            allowed_origins: Vec::new(),
            trust_forwarded: false,
            tls: false,
        }
    }
}

impl Exposure {
    /// The scheme and host clients used to reach the server, for URLs it
    /// hands out (the discovery document's `rootUrl`).
    pub(crate) fn public_base(&self, headers: &HeaderMap) -> String {
        let forwarded = |name: &str| {
            self.trust_forwarded
                .then(|| headers.get(name))
                .flatten()
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.split(',').next())
                .map(str::trim)
                .filter(|value| !value.is_empty())
        };
        let scheme = forwarded("x-forwarded-proto")
            .filter(|scheme| matches!(*scheme, "http" | "https"))
            .unwrap_or(if self.tls { "https" } else { "http" });
        let host = forwarded("x-forwarded-host")
            .or_else(|| headers.get(header::HOST).and_then(|host| host.to_str().ok()))
            .unwrap_or("127.0.0.1:8080");
        format!("{scheme}://{host}")
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        match &self.hosts {
            Hosts::Any => true,
            Hosts::Loopback(extra) => {
                matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]" | "::1")
                    || name.ends_with(".localhost")
                    || extra.iter().any(|allowed| allowed.eq_ignore_ascii_case(&name))
            }
            Hosts::Only(names) => names.iter().any(|allowed| allowed.eq_ignore_ascii_case(&name)),
        }
    }

    fn origin_allowed(&self, origin: &str, headers: &HeaderMap) -> bool {
        origin == self.public_base(headers)
            || self
                .allowed_origins
                .iter()
                .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// The host name of a `Host` header, lower-cased, without its port.
fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host.clone(), |(name, _)| format!("{name}]"));
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
        _ => host,
    }
}

/// Refuses requests for hosts the server does not answer (both protocols).
pub(crate) async fn check_host(
    State(service): State<std::sync::Arc<Service>>,
    request: Request,
    next: Next,
) -> Response {
    let exposure = service.exposure();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|authority| authority.to_string()));
    if let Some(host) = host
        && !exposure.host_allowed(&host)
    {
        let err = Error::new(
            Code::PermissionDenied,
            "HOST_NOT_ALLOWED",
            format!(
                "this server does not answer for host {:?}; serve it with --allowed-hosts {} to allow it",
                host_name(&host),
                host_name(&host)
            ),
        );
        return refuse(&service, &request, &err);
    }
    next.run(request).await
}

/// Refuses changing REST calls that a web page could have sent on its own
/// (see the module docs).
pub(crate) async fn check_browser(
    State(service): State<std::sync::Arc<Service>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let exposure = service.exposure();
    let text = |name: header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    let origin = text(header::ORIGIN);
    let cross_site = matches!(
        headers.get("sec-fetch-site").and_then(|value| value.to_str().ok()),
        Some("cross-site" | "same-site")
    );
    let foreign = match origin {
        Some(origin) => !exposure.origin_allowed(origin, headers),
        None => cross_site,
    };
    if foreign {
        let err = Error::new(
            Code::PermissionDenied,
            "CROSS_SITE_REQUEST",
            format!(
                "a page from another site ({}) may not make changing calls; allow its origin with --allowed-origins",
                origin.unwrap_or("unknown origin")
            ),
        );
        return refuse(&service, &request, &err);
    }
    let content_type = text(header::CONTENT_TYPE).unwrap_or_default().to_ascii_lowercase();
    let form = ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"]
        .iter()
        .any(|kind| content_type.starts_with(kind));
    if form {
        let err = Error::new(
            Code::InvalidArgument,
            "UNSUPPORTED_CONTENT_TYPE",
            format!(
                "a {content_type} body is refused (a web page could send one to this server); send JSON with \
                 Content-Type: application/json (curl: --json '{{...}}' or -H 'Content-Type: application/json')"
            ),
        );
        return refuse(&service, &request, &err);
    }
    next.run(request).await
}

fn refuse(service: &Service, request: &Request, err: &Error) -> Response {
    let request_id = request.extensions().get::<RequestId>().map_or("", |id| id.0.as_str());
    super::error_response(service, request_id, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_ports() {
        assert_eq!(host_name("LOCALHOST:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("evil.example:80"), "evil.example");
    }

    #[test]
    fn loopback_servers_answer_only_loopback_names() {
        let exposure = Exposure::default();
        for host in ["localhost:8080", "127.0.0.1:1", "[::1]:8080", "app.localhost"] {
            assert!(exposure.host_allowed(host), "{host}");
        }
        for host in ["evil.example", "127.0.0.1.evil.example:8080", "localhost.evil.example"] {
            assert!(!exposure.host_allowed(host), "{host}");
        }
        let named = Exposure {
            hosts: Hosts::Loopback(vec!["ops.internal".into()]),
            ..Exposure::default()
        };
        assert!(named.host_allowed("OPS.internal:8080"));
        let public = Exposure {
            hosts: Hosts::Any,
            ..Exposure::default()
        };
        assert!(public.host_allowed("anything.example"));
    }

    #[test]
    fn forwarded_headers_count_only_from_a_trusted_proxy() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "10.0.0.5:8080".parse().unwrap());
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        headers.insert("x-forwarded-host", "ops.example.com".parse().unwrap());
        assert_eq!(Exposure::default().public_base(&headers), "http://10.0.0.5:8080");
        let behind = Exposure {
            trust_forwarded: true,
            ..Exposure::default()
        };
        assert_eq!(behind.public_base(&headers), "https://ops.example.com");
    }
}
