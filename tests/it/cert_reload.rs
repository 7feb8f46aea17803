//! Certificate directories reloading under a running proxy: kubelet's `..data` swap (acceptance
//! 2), refused pairs that leave the last good one serving (acceptance 3), the polling backstop,
//! and every key type and PEM format.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// The name every client in this module asks for; every leaf here carries it.
const NAME: &str = APP_NAME;
/// Acceptance 2: new handshakes present a swapped-in certificate within this long.
const ROTATION_DEADLINE: Duration = Duration::from_secs(2);
/// Acceptance 2: how many swaps in a row.
const ROTATIONS: usize = 20;
/// Bound for waits whose duration is not itself under test.
const WAIT: Duration = Duration::from_secs(10);

const RELOADS: &str = "wss_sidecar_cert_reloads_total";

/// A proxy serving a kubelet-style Secret volume, in front of an echo app.
struct Fixture {
    kubelet: KubeletDir,
    /// `dir:<path>`, the source label in metrics.
    source: String,
    served: Served,
    _app: EchoServer,
}

impl Fixture {
    /// Publishes `first` into a fresh kubelet dir and starts a proxy on it.
    async fn start(ca: &TestCa, first: &TestPair) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut kubelet = KubeletDir::new(dir.path());
        kubelet.publish_pair(first);
        let app = EchoServer::start_tcp().await;
        let served = Served::start_in(ca, dir, &app.addr().to_string(), &[]).await;
        Fixture {
            kubelet,
            source: served.source(),
            served,
            _app: app,
        }
    }

    fn issue(&self, names: &[&str]) -> TestPair {
        self.served.ca.issue(LeafSpec::new(names))
    }

    async fn reloads(&self, result: &str) -> f64 {
        self.served
            .proxy
            .metric(RELOADS, &[("source", &self.source), ("result", result)])
            .await
    }

    async fn ws(&self) -> WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        self.served
            .ws()
            .await
            .unwrap_or_else(|e| panic!("websocket through the proxy: {e}"))
    }
}

/// The leaf a fresh handshake asking for [`NAME`] is shown.
async fn presented_leaf(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<CertificateDer<'static>> {
    let tls = tls_connect(addr, NAME, config).await?;
    Ok(peer_leaf(&tls))
}

/// Makes fresh handshakes until one presents `want`'s leaf, for at most `within`. Returns the
/// errors of the handshakes that failed on the way.
async fn await_leaf(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    want: &TestPair,
    within: Duration,
    what: &str,
) -> Vec<String> {
    let failures = Arc::new(Mutex::new(Vec::new()));
    wait_until(what, within, || {
        let config = Arc::clone(config);
        let failures = Arc::clone(&failures);
        let want = want.leaf_der.clone();
        async move {
            match presented_leaf(addr, config).await {
                Ok(leaf) => leaf == want,
                Err(e) => {
                    failures.lock().expect("lock").push(e.to_string());
                    false
                }
            }
        }
    })
    .await;
    failures.lock().expect("lock").clone()
}

/// One fresh handshake; panics unless it presents `want`'s leaf.
async fn assert_presents(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    want: &TestPair,
    what: &str,
) {
    let leaf = presented_leaf(addr, Arc::clone(config))
        .await
        .unwrap_or_else(|e| panic!("{what}: handshake failed: {e}"));
    assert!(
        leaf == want.leaf_der,
        "{what}: presented {:?}, expected {:?}",
        leaf_names(&leaf),
        leaf_names(&want.leaf_der)
    );
}

// Acceptance 2: kubelet swaps `..data` 20 times; every swap is served within 2 s with no failed
// handshake, and a WebSocket opened before the first swap keeps working throughout. The poll
// interval stays at its 10 s default, so only the directory watch can meet the deadline. On a
// multi-threaded runtime, as in production, so handshakes really run while a swap is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubelet_rotation_is_served_within_two_seconds_and_spares_live_connections() {
    let ca = TestCa::new("rotation CA");
    let pairs: Vec<TestPair> = (0..=ROTATIONS)
        .map(|i| ca.issue(LeafSpec::new(&[NAME, &format!("rot-{i}.test")])))
        .collect();
    let mut fx = Fixture::start(&ca, &pairs[0]).await;
    let addr = fx.served.proxy.addr;
    assert_presents(addr, &fx.served.client, &pairs[0], "before any swap").await;
    assert_eq!(fx.reloads("success").await, 1.0, "the first load counts");

    let mut live = fx.ws().await;
    assert!(
        peer_leaf(live.get_ref()) == pairs[0].leaf_der,
        "the live WebSocket was opened on pair 0"
    );
    assert_echo(&mut live, Message::text("before any swap")).await;

    let mut slowest = Duration::ZERO;
    for (i, pair) in pairs.iter().enumerate().skip(1) {
        let published = Instant::now();
        fx.kubelet.publish_pair(pair);
        let within = ROTATION_DEADLINE.saturating_sub(published.elapsed());
        let failures = await_leaf(
            addr,
            &fx.served.client,
            pair,
            within,
            &format!("swap {i} is presented to new handshakes (deadline 2 s from the swap)"),
        )
        .await;
        slowest = slowest.max(published.elapsed());
        assert!(
            failures.is_empty(),
            "swap {i}: handshakes failed during the rotation: {failures:?}"
        );
        assert_echo(&mut live, Message::text(format!("after swap {i}"))).await;
        let open = fx
            .served
            .proxy
            .metric("wss_sidecar_connections_open", &[])
            .await;
        assert!(
            open >= 1.0,
            "swap {i}: connections_open is {open} with a live WebSocket"
        );
    }
    assert!(
        peer_leaf(live.get_ref()) == pairs[0].leaf_der,
        "the live connection still holds the session it opened with"
    );
    assert_echo(&mut live, Message::binary(vec![7u8; 100_000])).await;

    assert_eq!(
        fx.reloads("success").await,
        1.0 + ROTATIONS as f64,
        "one successful reload per swap (slowest swap took {slowest:?})"
    );
    assert_eq!(fx.reloads("failure").await, 0.0, "no reload failed");
    let refused = fx.served.proxy.metrics().await;
    for reason in ["timeout", "not_tls", "eof", "tls"] {
        assert_eq!(
            refused.value(
                "wss_sidecar_handshake_failures_total",
                &[("reason", reason)]
            ),
            0.0,
            "the proxy saw a failed handshake ({reason}) during the rotation"
        );
    }
}

/// Acceptance 3: `bad` is published over a serving pair; it is refused, the reload-failure
/// counter rises, the previous leaf keeps serving new handshakes and old and new WebSockets
/// work; then a good pair is published and served (the source recovers).
async fn refused_pair_keeps_the_previous_one(what: &str, bad: impl FnOnce(&TestCa) -> TestPair) {
    let ca = TestCa::new("refusal CA");
    let good = ca.issue(LeafSpec::new(&[NAME, "good.test"]));
    let mut fx = Fixture::start(&ca, &good).await;
    let addr = fx.served.proxy.addr;
    let mut live = fx.ws().await;
    assert_echo(&mut live, Message::text("before")).await;
    assert_eq!(fx.reloads("failure").await, 0.0);

    let bad = bad(&ca);
    fx.kubelet.publish_pair(&bad);
    // The refusal is visible as a counted reload failure.
    let labels = [("source", fx.source.as_str()), ("result", "failure")];
    fx.served
        .proxy
        .wait_for_metric_at_least(RELOADS, &labels, 1.0)
        .await;

    let config = &fx.served.client;
    assert_presents(addr, config, &good, &format!("after the {what}")).await;
    assert_echo(&mut live, Message::text("after the refusal")).await;
    let mut fresh = fx.ws().await;
    assert!(
        peer_leaf(fresh.get_ref()) == good.leaf_der,
        "a new WebSocket after the {what} is served the previous pair"
    );
    assert_echo(&mut fresh, Message::text("new connection")).await;
    assert_eq!(
        fx.reloads("success").await,
        1.0,
        "the {what} was not published"
    );
    let ready = fx.served.proxy.admin_get("/readyz").await;
    assert_eq!(ready.0, 200, "still ready after the {what}: {ready:?}");

    let next = fx.issue(&[NAME, "recovered.test"]);
    fx.kubelet.publish_pair(&next);
    let failures = await_leaf(
        addr,
        &fx.served.client,
        &next,
        WAIT,
        &format!("a good pair after the {what} is served"),
    )
    .await;
    assert!(failures.is_empty(), "handshakes failed: {failures:?}");
    assert_eq!(fx.reloads("success").await, 2.0);
    assert_eq!(
        fx.reloads("failure").await,
        1.0,
        "the {what} was refused exactly once"
    );
    assert_echo(&mut live, Message::text("after recovery")).await;
}

#[tokio::test]
async fn a_key_that_does_not_match_is_refused() {
    refused_pair_keeps_the_previous_one("mismatched key", |ca| {
        let cert = ca.issue(LeafSpec::new(&[NAME, "mismatch.test"]));
        let other = ca.issue(LeafSpec::new(&[NAME, "other.test"]));
        cert.with_key_of(&other)
    })
    .await;
}

#[tokio::test]
async fn a_truncated_pem_is_refused() {
    refused_pair_keeps_the_previous_one("truncated certificate PEM", |ca| {
        ca.issue(LeafSpec::new(&[NAME, "truncated.test"]))
            .truncated()
    })
    .await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    refused_pair_keeps_the_previous_one("expired certificate", |ca| {
        ca.issue(LeafSpec::new(&[NAME, "expired.test"]).expired())
    })
    .await;
}

#[tokio::test]
async fn a_not_yet_valid_certificate_is_refused() {
    refused_pair_keeps_the_previous_one("not-yet-valid certificate", |ca| {
        ca.issue(LeafSpec::new(&[NAME, "future.test"]).not_yet_valid())
    })
    .await;
}

// A plain directory (hostPath, hand-made) rewritten in place is picked up, by its events or
// by the 500 ms poll.
#[tokio::test]
async fn plain_files_rewritten_in_place_are_picked_up() {
    let ca = TestCa::new("plain CA");
    let first = ca.issue(LeafSpec::new(&[NAME, "first.test"]));
    let second = ca.issue(LeafSpec::new(&[NAME, "second.test"]));
    let app = EchoServer::start_tcp().await;
    let upstream = app.addr().to_string();
    let served =
        Served::start_with(&ca, &first, &upstream, &["--cert-poll-interval", "500ms"]).await;
    let (addr, config) = (served.proxy.addr, &served.client);
    assert_presents(addr, config, &first, "before the rewrite").await;

    write_plain_pair(served.cert_dir(), &second);
    await_leaf(
        addr,
        config,
        &second,
        WAIT,
        "the rewritten files are served",
    )
    .await;
}

/// Points `dir/tls.crt` and `dir/tls.key` at files in `target`, which the proxy does not watch.
fn link_pair_into(dir: &Path, target: &Path) {
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(target.join(file), dir.join(file)).expect("symlink");
    }
}

/// Replaces `dir`'s files with `pair`, each by an atomic rename.
fn replace_pair(dir: &Path, pair: &TestPair) {
    for (file, contents) in [("tls.crt", &pair.cert_pem), ("tls.key", &pair.key_pem)] {
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, contents).expect("write");
        std::fs::rename(&tmp, dir.join(file)).expect("rename");
    }
}

// The poll alone: the cert dir's files are symlinks into another directory, so a change there
// raises no event in the watched directory; only the `--cert-poll-interval` re-read sees it.
#[tokio::test]
async fn the_poll_finds_changes_the_watch_cannot_see() {
    let ca = TestCa::new("poll CA");
    let first = ca.issue(LeafSpec::new(&[NAME, "first.test"]));
    let second = ca.issue(LeafSpec::new(&[NAME, "second.test"]));
    let watched = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    replace_pair(elsewhere.path(), &first);
    link_pair_into(watched.path(), elsewhere.path());
    let app = EchoServer::start_tcp().await;
    let upstream = app.addr().to_string();
    let served =
        Served::start_in(&ca, watched, &upstream, &["--cert-poll-interval", "500ms"]).await;
    let (addr, config) = (served.proxy.addr, &served.client);
    assert_presents(addr, config, &first, "before the change").await;

    replace_pair(elsewhere.path(), &second);
    await_leaf(
        addr,
        config,
        &second,
        WAIT,
        "the poll picks up the change behind the symlinks",
    )
    .await;
}

// Every key type the sidecar claims (RSA 2048, ECDSA P-256/P-384, Ed25519) in every PEM format
// it claims (PKCS#1, SEC1, PKCS#8) loads from a directory and completes a TLS 1.3 handshake.
#[tokio::test]
async fn every_key_kind_and_format_is_served_from_a_directory() {
    let ca = TestCa::new("key kinds CA");
    let app = EchoServer::start_tcp().await;
    let upstream = app.addr().to_string();
    for kind in KeyKind::ALL {
        for &format in kind.formats() {
            let what = format!("{kind:?} key as {format:?}");
            let pair = ca.issue(LeafSpec::new(&[NAME]).key(kind).key_format(format));
            let served = Served::start_with(&ca, &pair, &upstream, &[]).await;
            assert_presents(served.proxy.addr, &served.client, &pair, &what).await;
            let mut ws = served.ws().await.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_echo(&mut ws, Message::text(what.clone())).await;
            drop(ws);
            served.proxy.shutdown().await.expect("clean shutdown");
        }
    }
}

#[tokio::test]
async fn the_chain_in_tls_crt_is_served_after_the_leaf() {
    let root = TestCa::new("chain root");
    let intermediate = root.intermediate("chain intermediate");
    let pair = intermediate.issue(LeafSpec::new(&[NAME]));
    let app = EchoServer::start_tcp().await;
    // The client trusts only the root, so the handshake works only if the intermediate is sent.
    let served = Served::start_with(&root, &pair, &app.addr().to_string(), &[]).await;
    let tls = served
        .tls()
        .await
        .expect("handshake with a client that trusts only the root");
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificates")
        .to_vec();
    assert_eq!(
        chain,
        vec![pair.leaf_der.clone(), intermediate.cert_der()],
        "leaf, then chain"
    );
    drop(tls);
    let mut ws = served
        .ws()
        .await
        .expect("wss through a chained certificate");
    assert_echo(&mut ws, Message::text("chained")).await;
}
