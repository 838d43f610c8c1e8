//! What a web page may not make a browser do to a server on the user's
//! machine, and how the server answers for other host names and behind
//! proxies.

use serde_json::{Value, json};

use crate::support::TestServer;

async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = server
        .http
        .request(method.parse().unwrap(), format!("{}{path}", server.endpoint));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn state(server: &TestServer, id: &str) -> Value {
    server.get(&format!("projects/p/operations/{id}")).await.1
}

#[tokio::test]
async fn cross_site_pages_cannot_change_anything() {
    let server = TestServer::start().await;
    server.post("projects/p/operations", json!({"operationId": "x"})).await;
    let before = state(&server, "x").await;
    let cancel = "/v1/projects/p/operations/x:cancel";
    for (headers, body, status, reason) in [
        (vec![("origin", "http://evil.example")], None, 403, "CROSS_SITE_REQUEST"),
        (vec![("origin", "null")], None, 403, "CROSS_SITE_REQUEST"),
        (vec![("sec-fetch-site", "cross-site")], None, 403, "CROSS_SITE_REQUEST"),
        (
            vec![("content-type", "text/plain")],
            Some("{}"),
            415,
            "UNSUPPORTED_CONTENT_TYPE",
        ),
        (
            vec![("content-type", "application/x-www-form-urlencoded")],
            Some("{}"),
            415,
            "UNSUPPORTED_CONTENT_TYPE",
        ),
        (
            vec![("content-type", "multipart/form-data; boundary=x")],
            Some("--x--"),
            415,
            "UNSUPPORTED_CONTENT_TYPE",
        ),
    ] {
        let (got, refused) = send(&server, "POST", cancel, &headers, body).await;
        assert_eq!(got, status, "{headers:?}: {refused}");
        assert_eq!(refused["error"]["details"][0]["reason"], reason, "{refused}");
    }
    let (got, _) = send(
        &server,
        "DELETE",
        "/v1/projects/p/operations/x",
        &[("origin", "http://evil.example")],
        None,
    )
    .await;
    assert_eq!(got, 403);
    assert_eq!(state(&server, "x").await, before, "nothing changed");
    // The curl hint is in the message.
    let (_, refused) = send(&server, "POST", cancel, &[("content-type", "text/plain")], Some("{}")).await;
    assert!(
        refused["error"]["message"].as_str().unwrap().contains("--json"),
        "{refused}"
    );
}

#[tokio::test]
async fn clients_that_are_not_browsers_keep_working() {
    let server = TestServer::start().await;
    server.post("projects/p/operations", json!({"operationId": "x"})).await;
    let own = server.endpoint.clone();
    for headers in [
        vec![],
        vec![("content-type", "application/json")],
        vec![("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
    ] {
        let (status, body) = send(&server, "POST", "/v1/projects/p/operations/x:cancel", &headers, None).await;
        assert_eq!(status, 200, "{headers:?}: {body}");
    }
    let (status, _) = send(
        &server,
        "GET",
        "/v1/projects/p/operations/x",
        &[("origin", "http://evil.example")],
        None,
    )
    .await;
    assert_eq!(
        status, 200,
        "reads are not refused; browsers keep their answers from other pages"
    );
}

#[tokio::test]
async fn a_loopback_server_answers_only_loopback_host_names() {
    let server = TestServer::start().await;
    for host in ["evil.example", "evil.example:80", "127.0.0.1.evil.example"] {
        let (status, refused) = send(&server, "GET", "/v1/projects/p/operations", &[("host", host)], None).await;
        assert_eq!(status, 403, "{host}: {refused}");
        assert_eq!(refused["error"]["details"][0]["reason"], "HOST_NOT_ALLOWED");
    }
    for host in ["localhost:9", "127.0.0.1", "[::1]:8080"] {
        let (status, _) = send(&server, "GET", "/v1/projects/p/operations", &[("host", host)], None).await;
        assert_eq!(status, 200, "{host}");
    }
}

#[tokio::test]
async fn the_discovery_root_url_believes_forwarded_headers_only_from_a_trusted_proxy() {
    let forwarded = [("x-forwarded-proto", "https"), ("x-forwarded-host", "ops.example.com")];
    let direct = TestServer::start().await;
    let (_, document) = send(&direct, "GET", "/$discovery/rest?version=v1", &forwarded, None).await;
    assert!(
        document["rootUrl"].as_str().unwrap().starts_with("http://127.0.0.1:"),
        "{}",
        document["rootUrl"]
    );
    let behind = TestServer::start_with(|config| {
        config.exposure.trust_forwarded = true;
        config.exposure.hosts = longrun_server::Hosts::Any;
    })
    .await;
    let (_, document) = send(&behind, "GET", "/$discovery/rest?version=v1", &forwarded, None).await;
    assert_eq!(document["rootUrl"], "https://ops.example.com/");
}
