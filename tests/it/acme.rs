//! ACME against the real Pebble: TLS-ALPN-01 on the wss port (acceptance 1), HTTP-01 on
//! `--http-listen` with redirects (2), a restart that reuses the stored certificate (3),
//! external account binding, and bad ACME flags refused at start-up.

use tokio::net::TcpListener;

use crate::support::acme::{NAMES, ORDERS, acme_args, echo_as, wait_issued};
use crate::support::pebble::{Pebble, PebbleOptions, free_addr};
use crate::support::*;

async fn proxy_args(upstream: &str, acme: &[String]) -> Vec<String> {
    let mut args = vec!["--upstream".to_string(), upstream.to_string()];
    args.extend_from_slice(acme);
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn tls_alpn_01_from_an_empty_store_then_a_restart_reuses_the_certificate() {
    let app = EchoServer::start_tcp().await;
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tls.local_addr().unwrap().port();
    let pebble = Pebble::start(PebbleOptions {
        tls_port: port,
        http_port: free_addr().await.port(),
        eab: None,
    })
    .await;
    let store = tempfile::tempdir().unwrap();
    let args = proxy_args(
        &app.addr().to_string(),
        &acme_args(&pebble, &store, &NAMES, &[]),
    )
    .await;

    let proxy = TestProxy::start_unready_on(tls, None, &strs(&args)).await;
    wait_issued(&proxy).await;
    assert_eq!(proxy.metric(ORDERS, &[("result", "success")]).await, 1.0);
    let mut issued = None;
    for name in NAMES {
        let leaf = echo_as(&pebble, proxy.addr, name).await;
        let mut names = leaf_names(&leaf);
        names.sort();
        assert_eq!(names, NAMES, "one certificate for all the names");
        issued.get_or_insert(leaf);
    }
    // Ordinary clients never negotiate acme-tls/1, even when they offer it beside http/1.1.
    let config = client_config(&pebble.issuer_roots().await, &[b"acme-tls/1", b"http/1.1"]);
    let stream = tls_connect(proxy.addr, NAMES[0], config)
        .await
        .expect("tls");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        Some(peer_leaf(&stream)),
        issued,
        "the served certificate, not a challenge"
    );
    drop(stream);
    // With no pending challenge, an acme-tls/1-only hello gets no certificate at all.
    let acme_only = acme_tls_only_config();
    assert!(tls_connect(proxy.addr, NAMES[0], acme_only).await.is_err());
    proxy.shutdown().await.expect("clean shutdown");

    // Restart on the same store: ready with the same certificate at once, and no order.
    let restarted = TestProxy::start(&strs(&args)).await;
    let leaf = echo_as(&pebble, restarted.addr, NAMES[1]).await;
    assert_eq!(Some(leaf), issued, "the stored certificate is served again");
    assert_eq!(
        restarted.metric(ORDERS, &[]).await,
        0.0,
        "no order after a restart"
    );
    let files: Vec<_> = std::fs::read_dir(store.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "one certificate directory in the store");
}

/// An acme-tls/1-only client config that accepts any certificate (as a validator does).
fn acme_tls_only_config() -> std::sync::Arc<rustls::ClientConfig> {
    let mut config = (*any_certificate_config()).clone();
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    std::sync::Arc::new(config)
}

#[tokio::test]
async fn http_01_on_http_listen_and_plain_requests_are_redirected() {
    let app = EchoServer::start_tcp().await;
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tls_port, http_addr) = (tls.local_addr().unwrap().port(), http.local_addr().unwrap());
    let pebble = Pebble::start(PebbleOptions {
        tls_port: free_addr().await.port(),
        http_port: http_addr.port(),
        eab: None,
    })
    .await;
    let store = tempfile::tempdir().unwrap();
    let http_flag = http_addr.to_string();
    let acme = acme_args(&pebble, &store, &NAMES, &["--http-listen", &http_flag]);
    let args = proxy_args(&app.addr().to_string(), &acme).await;

    let proxy = TestProxy::start_unready_on(tls, Some(http), &strs(&args)).await;
    wait_issued(&proxy).await;
    for name in NAMES {
        echo_as(&pebble, proxy.addr, name).await;
    }
    let response = raw_http(
        http_addr,
        "GET /chat?room=1 HTTP/1.1\r\nHost: one.acme.test\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 308"), "{response}");
    let location = format!("location: https://one.acme.test:{tls_port}/chat?room=1\r\n");
    assert!(
        response.to_ascii_lowercase().contains(&location),
        "{response}"
    );
    let response = raw_http(
        http_addr,
        "GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 404"),
        "unknown tokens are not answered: {response}"
    );
}

async fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, tcp.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn external_account_binding_flags_reach_the_ca() {
    const KID: &str = "kid-1";
    const HMAC: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let app = EchoServer::start_tcp().await;
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pebble = Pebble::start(PebbleOptions {
        tls_port: tls.local_addr().unwrap().port(),
        http_port: free_addr().await.port(),
        eab: Some((KID, HMAC)),
    })
    .await;
    let store = tempfile::tempdir().unwrap();
    let eab = ["--acme-eab-kid", KID, "--acme-eab-hmac-key", HMAC];
    let args = proxy_args(
        &app.addr().to_string(),
        &acme_args(&pebble, &store, &NAMES[..1], &eab),
    )
    .await;
    let proxy = TestProxy::start_unready_on(tls, None, &strs(&args)).await;
    wait_issued(&proxy).await;
    echo_as(&pebble, proxy.addr, NAMES[0]).await;
}

#[tokio::test]
async fn bad_acme_flags_stop_start_up_with_64_naming_the_flag() {
    /// Flags, environment, and the flag the message must name.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let cases: [Case; 4] = [
        (
            &["--acme-domain", "a.test", "--acme-store", "secret:ns/acme"],
            &[],
            "--acme-store",
        ),
        (
            &["--acme-directory", "nowhere"],
            &[("WSS_SIDECAR_ACME_DOMAIN", "a.test")],
            "--acme-directory",
        ),
        (
            &["--acme-domain", "a.test", "--acme-eab-kid", "k"],
            &[],
            "--acme-eab-hmac-key",
        ),
        (
            &[
                "--http-listen",
                &taken,
                "--admin-listen",
                "off",
                "--listen",
                "127.0.0.1:0",
            ],
            &[],
            "--http-listen",
        ),
    ];
    for (args, env, flag) in cases {
        let args = [&["proxy"], args].concat();
        let (code, stderr) = run_to_exit(&args, env).await;
        assert_eq!(code, 64, "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} should name {flag}: {stderr}"
        );
    }
}
