//! Client certificates (mTLS): `--client-ca` with `--client-auth required|optional`, the
//! `--allow-san`/`--allow-cn` allow-list, the identity reaching the app (X-Client-Cert-*
//! headers, PROXY v2 TLV), and a CA bundle rotated without a restart (a broken one refused).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ppp::{HeaderResult, v2};
use rustls::ClientConfig;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const HANDSHAKE_FAILURES: &str = "wss_sidecar_handshake_failures_total";
const REJECTED: &str = "wss_sidecar_connections_rejected_total";
const RELOADS: &str = "wss_sidecar_cert_reloads_total";

/// A client CA bundle in a directory of its own (as a mounted ConfigMap would be).
struct Bundle {
    dir: TempDir,
}

impl Bundle {
    fn new(ca: &TestCa) -> Bundle {
        let bundle = Bundle {
            dir: tempfile::tempdir().unwrap(),
        };
        bundle.replace(ca);
        bundle
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Replaces the bundle atomically (write aside, rename over), as tools that rotate
    /// files do.
    fn replace(&self, ca: &TestCa) {
        let aside = self.dir.path().join(".ca.pem.new");
        std::fs::write(&aside, ca.cert_pem()).unwrap();
        std::fs::rename(&aside, self.path()).unwrap();
    }
}

/// A fresh client CA as the bundle of a proxy with `--client-ca BUNDLE EXTRA…` in front of
/// an echo app.
async fn start_echo(extra: &[&str]) -> (TestCa, Bundle, EchoServer, Served) {
    let client_ca = TestCa::new("client CA");
    let bundle = Bundle::new(&client_ca);
    let echo = EchoServer::start_tcp().await;
    let served = start(&echo.addr().to_string(), &bundle.path(), extra).await;
    (client_ca, bundle, echo, served)
}

/// A proxy with `--client-ca BUNDLE EXTRA…` in front of `upstream`.
async fn start(upstream: &str, bundle: &Path, extra: &[&str]) -> Served {
    let bundle = bundle.to_str().unwrap();
    let mut args = vec!["--client-ca", bundle];
    args.extend_from_slice(extra);
    Served::start(upstream, &args).await
}

/// A client of `served` presenting a certificate for `names` (the first is also the CN)
/// from `ca`, or none.
fn client(served: &Served, cert: Option<(&TestCa, &[&str])>) -> Arc<ClientConfig> {
    let pair = cert.map(|(ca, names)| ca.issue(LeafSpec::new(names).for_clients()));
    mtls_client(&[served.ca.cert_der()], pair.as_ref())
}

async fn ws_echo(served: &Served, config: Arc<ClientConfig>) -> Result<(), String> {
    let mut ws = ws_connect(served.proxy.addr, APP_NAME, config).await?;
    try_echo_once(&mut ws, Message::text("hi"))
        .await
        .map(|_| ())
}

fn header(echo: &EchoServer, name: &str) -> Option<String> {
    echo.last_request_headers()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

#[tokio::test]
async fn required_refuses_no_certificate_and_other_cas_and_passes_the_identity_on() {
    let (client_ca, _bundle, echo, served) = start_echo(&["--forwarded-headers"]).await;

    let none = ws_echo(&served, client(&served, None)).await;
    assert!(none.is_err(), "a client without a certificate got through");
    let stranger_ca = TestCa::new("another CA");
    let other = ws_echo(
        &served,
        client(&served, Some((&stranger_ca, &["caller.test"]))),
    )
    .await;
    assert!(other.is_err(), "a certificate from another CA got through");
    served
        .proxy
        .wait_for_metric(HANDSHAKE_FAILURES, &[("reason", "client_cert")], 2.0)
        .await;
    assert_eq!(echo.connections_accepted(), 0);

    let good = client(&served, Some((&client_ca, &["caller", "caller.test"])));
    ws_echo(&served, good)
        .await
        .expect("a certificate from --client-ca is let through");
    assert_eq!(header(&echo, "x-client-cert-cn").as_deref(), Some("caller"));
    assert_eq!(
        header(&echo, "x-client-cert-san").as_deref(),
        Some("caller, caller.test")
    );
    let subject = header(&echo, "x-client-cert-subject").unwrap();
    assert!(subject.contains("CN=caller"), "{subject}");
}

#[tokio::test]
async fn optional_lets_clients_without_a_certificate_through_without_an_identity() {
    let (_client_ca, _bundle, echo, served) =
        start_echo(&["--client-auth", "optional", "--forwarded-headers"]).await;
    ws_echo(&served, client(&served, None))
        .await
        .expect("optional lets it through");
    assert_eq!(header(&echo, "x-client-cert-subject"), None);
    let stranger_ca = TestCa::new("another CA");
    let other = ws_echo(&served, client(&served, Some((&stranger_ca, &["x.test"])))).await;
    assert!(
        other.is_err(),
        "a certificate that is sent is still verified"
    );
}

#[tokio::test]
async fn the_identity_reaches_the_app_in_the_proxy_v2_ssl_tlv() {
    let client_ca = TestCa::new("client CA");
    let bundle = Bundle::new(&client_ca);
    let (upstream_addr, mut accepted) = raw_upstream_tcp().await;
    let served = start(
        &upstream_addr.to_string(),
        &bundle.path(),
        &["--proxy-protocol", "v2"],
    )
    .await;
    let config = client(&served, Some((&client_ca, &["caller"])));
    let mut tls = tls_connect(served.proxy.addr, APP_NAME, config)
        .await
        .unwrap();
    tls.write_all(b"x").await.unwrap();
    let mut upstream = accepted.recv().await.unwrap();
    let bytes = read_until(&mut upstream, |b| b.ends_with(b"x")).await;
    let HeaderResult::V2(Ok(header)) = HeaderResult::parse(&bytes) else {
        panic!("not a v2 header: {bytes:?}");
    };
    let ssl = header
        .tlvs()
        .map(|t| t.unwrap())
        .find(|t| t.kind == v2::Type::SSL as u8)
        .expect("PP2_TYPE_SSL")
        .value
        .to_vec();
    assert_eq!(ssl[0], 0x07, "SSL, CERT_CONN and CERT_SESS");
    assert_eq!(&ssl[1..5], &[0, 0, 0, 0], "verify = 0 (success)");
    // The sub-TLVs, read per the spec: type, 16-bit length, value.
    let mut subs = Vec::new();
    let mut rest = &ssl[5..];
    while rest.len() >= 3 {
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        subs.push((rest[0], rest[3..3 + len].to_vec()));
        rest = &rest[3 + len..];
    }
    assert!(
        subs.contains(&(v2::Type::SSLCommonName as u8, b"caller".to_vec())),
        "{subs:?}"
    );
}

#[tokio::test]
async fn a_client_outside_the_allow_list_is_refused() {
    let (client_ca, _bundle, echo, served) =
        start_echo(&["--allow-cn", "billing", "--allow-san", "reports.internal"]).await;
    let by_cn = client(&served, Some((&client_ca, &["billing"])));
    ws_echo(&served, by_cn)
        .await
        .expect("allowed by common name");
    let by_san = client(&served, Some((&client_ca, &["x", "reports.internal"])));
    ws_echo(&served, by_san).await.expect("allowed by SAN");
    assert_eq!(echo.connections_accepted(), 2);

    let stranger = client(
        &served,
        Some((&client_ca, &["intruder", "intruder.internal"])),
    );
    let refused = ws_echo(&served, stranger).await.unwrap_err();
    assert!(refused.contains("403"), "{refused}");
    served
        .proxy
        .wait_for_metric(REJECTED, &[("reason", "not_allowed")], 1.0)
        .await;
    assert_eq!(
        echo.connections_accepted(),
        2,
        "the refused client never reached the app"
    );
}

#[tokio::test]
async fn a_rotated_ca_bundle_applies_to_new_handshakes_without_a_restart() {
    let old_ca = TestCa::new("old client CA");
    let new_ca = TestCa::new("new client CA");
    let bundle = Bundle::new(&old_ca);
    let echo = EchoServer::start_tcp().await;
    let served = start(&echo.addr().to_string(), &bundle.path(), &[]).await;
    let old_client = client(&served, Some((&old_ca, &["caller"])));
    let new_client = client(&served, Some((&new_ca, &["caller"])));
    ws_echo(&served, old_client.clone())
        .await
        .expect("old CA trusted at start");
    assert!(ws_echo(&served, new_client.clone()).await.is_err());

    bundle.replace(&new_ca);
    wait_until("the new CA is trusted", Duration::from_secs(10), || {
        let (served, config) = (&served, new_client.clone());
        async move { ws_echo(served, config).await.is_ok() }
    })
    .await;
    assert!(
        ws_echo(&served, old_client).await.is_err(),
        "the old CA is no longer trusted"
    );
    let source = format!("client-ca:{}", bundle.path().display());
    let reloads = [("source", source.as_str()), ("result", "success")];
    served.proxy.wait_for_metric(RELOADS, &reloads, 1.0).await;

    // A broken bundle is refused, counted, and the last good one stays in force.
    let aside = bundle.dir.path().join(".broken");
    std::fs::write(
        &aside,
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::rename(&aside, bundle.path()).unwrap();
    let failures = [("source", source.as_str()), ("result", "failure")];
    served.proxy.wait_for_metric(RELOADS, &failures, 1.0).await;
    ws_echo(&served, new_client)
        .await
        .expect("the last good bundle still applies");
}
