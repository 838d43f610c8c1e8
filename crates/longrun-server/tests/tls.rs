//! TLS without a proxy: a self-signed certificate, HTTP/1.1 and h2 by ALPN,
//! and URLs the server hands out in `https`.

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::TestServer;

/// A certificate for 127.0.0.1 and its key, as PEM files in `dir`, and the
/// certificate for clients to trust.
fn certificate(
    dir: &std::path::Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    rustls_pki_types::CertificateDer<'static>,
) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key, made.cert.der().clone())
}

/// Connects over TLS offering `alpn`; the stream and the protocol chosen.
async fn connect(
    server: &TestServer,
    trusted: &rustls_pki_types::CertificateDer<'static>,
    alpn: &[&[u8]],
) -> (tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Option<Vec<u8>>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let address = server.endpoint.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let protocol = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    (stream, protocol)
}

#[tokio::test]
async fn serves_https_and_negotiates_h2_for_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, trusted) = certificate(dir.path());
    let server = TestServer::start_with(|config| {
        config.tls = Some(longrun_server::tls_config(&cert, &key).unwrap());
        config.exposure.tls = true;
    })
    .await;
    let (_, protocol) = connect(&server, &trusted, &[b"h2", b"http/1.1"]).await;
    assert_eq!(protocol.as_deref(), Some(&b"h2"[..]), "gRPC clients need h2 by ALPN");
    let (mut stream, protocol) = connect(&server, &trusted, &[b"http/1.1"]).await;
    assert_eq!(protocol.as_deref(), Some(&b"http/1.1"[..]));
    stream
        .write_all(b"GET /$discovery/rest?version=v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"rootUrl\":\"https://127.0.0.1/\""), "{response}");
    // Plain text is not served on a TLS port.
    let plain = server.http.get(format!("{}/healthz", server.endpoint)).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[test]
fn bad_certificate_files_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path());
    let missing = dir.path().join("missing.pem");
    let err = longrun_server::tls_config(&missing, &key).unwrap_err();
    assert!(err.contains("cannot read certificates"), "{err}");
    let err = longrun_server::tls_config(&key, &key).unwrap_err();
    assert!(err.contains("holds no certificate"), "{err}");
    let other = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
    let other_key = dir.path().join("other.pem");
    std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
    let err = longrun_server::tls_config(&cert, &other_key).unwrap_err();
    assert!(err.contains("do not go together"), "{err}");
}
