//! ACME against the real Pebble: TLS-ALPN-01 on the wss port (acceptance 1), HTTP-01 on
//! `--http-listen` with redirects (2), a restart that reuses the stored certificate (3),
//! external account binding, bad ACME flags refused at start-up, and the self-check before
//! the CA is asked to validate (issue 14): nothing submitted while our names do not answer
//! (no server there, or a stale answer), no stored back-off for it, submitted anyway after its
//! timeout, and skipped on request.

use std::time::Duration;

use tokio::net::TcpListener;

use crate::support::acme::{
    ISSUE_TIMEOUT, NAMES, ORDERS, READY_SOLVING, acme_args, echo_as, wait_issued,
};
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

const SELF_CHECK_FAILURES: &str = "wss_sidecar_acme_self_check_failures_total";

/// Pebble validating TLS-ALPN-01 on the port of `tls`.
async fn pebble_on(tls: &TcpListener) -> Pebble {
    Pebble::start(PebbleOptions {
        tls_port: tls.local_addr().unwrap().port(),
        http_port: free_addr().await.port(),
        eab: None,
    })
    .await
}

#[tokio::test]
async fn no_challenge_is_submitted_while_dns_points_elsewhere_and_no_back_off_is_stored() {
    let app = EchoServer::start_tcp().await;
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pebble = pebble_on(&tls).await;
    // The name resolves to a loopback address where nothing listens.
    pebble.set_a(NAMES[0], "127.0.0.9").await;
    let store = tempfile::tempdir().unwrap();
    let args = proxy_args(
        &app.addr().to_string(),
        &acme_args(&pebble, &store, &NAMES[..1], &[]),
    )
    .await;
    let proxy = TestProxy::start_unready_on(tls, None, &strs(&args)).await;
    // Checked at 0 s and again 2 s later: the second failure shows it retries.
    proxy
        .wait_for_metric_at_least(SELF_CHECK_FAILURES, &[("reason", "connect")], 2.0)
        .await;
    assert_eq!(pebble.requests_logged("POST /order-plz"), 1, "one order");
    assert_eq!(
        pebble.challenges_submitted(),
        0,
        "no challenge submitted while the self-check fails"
    );
    // Ready meanwhile, answering the challenge, so that a Service would route the CA to us.
    let (status, body) = proxy.admin_get("/readyz").await;
    assert_eq!((status, body.as_str()), (200, READY_SOLVING));
    assert_eq!(proxy.metric(ORDERS, &[("result", "failure")]).await, 0.0);

    // Meanwhile the stored state holds the order in flight, and no failure nor back-off.
    let state = std::fs::read_dir(store.path())
        .unwrap()
        .map(|d| d.unwrap().path().join("state.json"))
        .find(|p| p.exists())
        .expect("the renewal state with the pending order");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    assert!(state["pending"].is_object(), "the order in flight: {state}");
    assert_eq!(state["failures"], 0, "no failure stored: {state}");
    assert!(
        state["next_attempt"].is_null(),
        "no back-off stored: {state}"
    );

    // DNS fixed: within the longest retry (30 s) the certificate arrives, without a back-off.
    pebble.set_a(NAMES[0], "127.0.0.1").await;
    let fixed = std::time::Instant::now();
    wait_issued(&proxy).await;
    let took = fixed.elapsed();
    assert!(
        took < Duration::from_secs(40),
        "issued {took:?} after the fix"
    );
    assert_eq!(
        pebble.challenges_submitted(),
        1,
        "submitted once, when right"
    );
    assert_eq!(proxy.metric(ORDERS, &[("result", "success")]).await, 1.0);
    assert_eq!(proxy.metric(ORDERS, &[("result", "failure")]).await, 0.0);
    assert_eq!(
        proxy
            .metric("wss_sidecar_acme_consecutive_failures", &[])
            .await,
        0.0
    );
    echo_as(&pebble, proxy.addr, NAMES[0]).await;
}

#[tokio::test]
async fn after_the_self_check_timeout_the_challenge_is_submitted_anyway() {
    let app = EchoServer::start_tcp().await;
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pebble = pebble_on(&tls).await;
    // The self-check dials a port where nothing listens (a load balancer that cannot hairpin);
    // the CA dials the sidecar.
    let dead = free_addr().await.port().to_string();
    let dns = pebble.dns().to_string();
    let extra = [
        "--acme-resolver",
        &dns,
        "--acme-self-check-tls-port",
        &dead,
        "--acme-self-check-timeout",
        "3s",
    ];
    let store = tempfile::tempdir().unwrap();
    let args = proxy_args(
        &app.addr().to_string(),
        &acme_args(&pebble, &store, &NAMES[..1], &extra),
    )
    .await;
    let started = std::time::Instant::now();
    let proxy = TestProxy::start_unready_on(tls, None, &strs(&args)).await;
    wait_issued(&proxy).await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "not before the timeout"
    );
    assert!(
        proxy
            .metric(SELF_CHECK_FAILURES, &[("reason", "connect")])
            .await
            >= 2.0
    );
    assert_eq!(pebble.challenges_submitted(), 1);
    echo_as(&pebble, proxy.addr, NAMES[0]).await;
}

#[tokio::test]
async fn skip_self_check_submits_at_once() {
    let app = EchoServer::start_tcp().await;
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pebble = pebble_on(&tls).await;
    let dead = free_addr().await.port().to_string();
    let extra = [
        "--acme-skip-self-check",
        "--acme-self-check-tls-port",
        &dead,
    ];
    let store = tempfile::tempdir().unwrap();
    let args = proxy_args(
        &app.addr().to_string(),
        &acme_args(&pebble, &store, &NAMES[..1], &extra),
    )
    .await;
    let proxy = TestProxy::start_unready_on(tls, None, &strs(&args)).await;
    tokio::time::timeout(ISSUE_TIMEOUT, wait_issued(&proxy))
        .await
        .unwrap();
    assert_eq!(
        proxy.metric(SELF_CHECK_FAILURES, &[]).await,
        0.0,
        "nothing dialled"
    );
    assert_eq!(pebble.challenges_submitted(), 1);
}

#[tokio::test]
async fn a_stale_answer_at_the_address_is_not_submitted() {
    let app = EchoServer::start_tcp().await;
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tls.local_addr().unwrap().port();
    let pebble = pebble_on(&tls).await;
    // Another server answers acme-tls/1 for the name, with someone else's key authorization
    // (an old order's pod, another deployment behind the same address).
    let Ok(stranger) = TcpListener::bind(("127.0.0.2", port)).await else {
        panic!("127.0.0.2:{port} is taken");
    };
    tokio::spawn(serve_stale_answer(stranger, NAMES[0]));
    pebble.set_a(NAMES[0], "127.0.0.2").await;
    let store = tempfile::tempdir().unwrap();
    let args = proxy_args(
        &app.addr().to_string(),
        &acme_args(&pebble, &store, &NAMES[..1], &[]),
    )
    .await;
    let proxy = TestProxy::start_unready_on(tls, None, &strs(&args)).await;
    proxy
        .wait_for_metric_at_least(SELF_CHECK_FAILURES, &[("reason", "wrong_answer")], 2.0)
        .await;
    assert_eq!(
        pebble.challenges_submitted(),
        0,
        "the wrong answer is not submitted"
    );

    pebble.set_a(NAMES[0], "127.0.0.1").await;
    wait_issued(&proxy).await;
    assert_eq!(pebble.challenges_submitted(), 1);
    assert_eq!(proxy.metric(ORDERS, &[("result", "failure")]).await, 0.0);
}

/// Serves an RFC 8737 challenge certificate for `name` with a key authorization not ours.
async fn serve_stale_answer(listener: TcpListener, name: &'static str) {
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use std::sync::Arc;

    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);
    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }
    }

    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"stale.thumbprint");
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = provider.key_provider.load_private_key(der).unwrap();
    let certified = Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(certified)));
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    while let Ok((tcp, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = acceptor.accept(tcp).await;
        });
    }
}
