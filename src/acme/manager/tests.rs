//! The renewal loop's use of ACME Renewal Information (RFC 9773), against a fake CA that
//! offers it (Pebble 2.4 does not), with `now` passed in as the clock.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;

use super::*;
use crate::acme::ChallengeKind;
use crate::acme::DirStore;
use crate::certs::CertStore;

/// Serves a directory with `renewalInfo` and a fixed suggested window.
struct FakeCa {
    window: (i64, i64),
    retry_after: Arc<AtomicU64>,
    ari_requests: Arc<AtomicUsize>,
}

impl HttpClient for FakeCa {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let path = req.uri().path().to_string();
        let mut response = hyper::Response::builder();
        let body = if path == "/dir" {
            serde_json::json!({
                "newNonce": "https://ca.test/nonce",
                "newAccount": "https://ca.test/account",
                "newOrder": "https://ca.test/order",
                "renewalInfo": "https://ca.test/ari",
            })
        } else if path.starts_with("/ari/") {
            self.ari_requests.fetch_add(1, Ordering::SeqCst);
            let retry = self.retry_after.load(Ordering::SeqCst).to_string();
            response = response.header("Retry-After", retry);
            let rfc3339 = |t: i64| {
                time::OffsetDateTime::from_unix_timestamp(t)
                    .unwrap()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            };
            serde_json::json!({
                "suggestedWindow": { "start": rfc3339(self.window.0), "end": rfc3339(self.window.1) }
            })
        } else {
            response = response.status(404);
            serde_json::json!({})
        };
        let response = response
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        Box::pin(async move { Ok(BytesResponse::from(response)) })
    }
}

/// A 90-day leaf from a CA, so that it carries the authority key id ARI needs.
fn leaf_pem() -> String {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["a.test".to_string()]).unwrap();
    leaf.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    leaf.not_before = now;
    leaf.not_after = now + time::Duration::days(90);
    let key = KeyPair::generate().unwrap();
    leaf.signed_by(&key, &issuer).unwrap().pem()
}

struct Setup {
    manager: Manager,
    retry_after: Arc<AtomicU64>,
    ari_requests: Arc<AtomicUsize>,
    _root: tempfile::TempDir,
}

async fn setup(window: (i64, i64)) -> Setup {
    let retry_after = Arc::new(AtomicU64::new(1));
    let ari_requests = Arc::new(AtomicUsize::new(0));
    let fake = FakeCa {
        window,
        retry_after: Arc::clone(&retry_after),
        ari_requests: Arc::clone(&ari_requests),
    };
    let key = KeyPair::generate().unwrap();
    let account = Account::builder_with_http(Box::new(fake))
        .from_parts(
            "https://ca.test/account/1".into(),
            PrivatePkcs8KeyDer::from(key.serialize_der()),
            "https://ca.test/dir".into(),
        )
        .await
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let config = AcmeConfig {
        domains: vec!["a.test".into()],
        contacts: Vec::new(),
        directory: "https://ca.test/dir".into(),
        ca_root: None,
        store: crate::acme::StoreLocation::Dir(root.path().to_path_buf()),
        lease_duration: Duration::from_secs(30),
        challenge: ChallengeKind::TlsAlpn01,
        eab: None,
        renew_before: None,
        poll_interval: Duration::from_secs(1),
        backoff_base: Duration::from_secs(60),
        self_check: crate::acme::SelfCheckConfig {
            skip: true,
            timeout: Duration::from_secs(300),
            resolver: None,
            tls_port: 443,
            http_port: 80,
        },
    };
    let store = DirStore::open(root.path(), &config.directory, &config.domains).unwrap();
    let metrics = Arc::new(Metrics::new());
    let publisher = CertStore::new(Arc::clone(&metrics)).register("acme");
    let mut manager = Manager::new(config, Arc::new(store), publisher, metrics);
    manager.account = Some(account);
    manager.current = Some(CertInfo::parse(&leaf_pem()).unwrap());
    Setup {
        manager,
        retry_after,
        ari_requests,
        _root: root,
    }
}

fn now() -> i64 {
    epoch_seconds(SystemTime::now())
}

#[tokio::test]
async fn renews_inside_the_suggested_window_and_asks_again_after_retry_after() {
    let now = now();
    let window = (now + 1_000, now + 2_000);
    let mut s = setup(window).await;
    let state = RenewalState::default();

    let due = s.manager.due(&state, now).await;
    assert!(
        (window.0..=window.1).contains(&due),
        "{due} outside {window:?}"
    );
    // Retry-After: 1 second is clamped to a minute: no new request before then.
    assert_eq!(s.manager.due(&state, now + 59).await, due);
    assert_eq!(s.ari_requests.load(Ordering::SeqCst), 1);
    s.manager.due(&state, now + 61).await;
    assert_eq!(s.ari_requests.load(Ordering::SeqCst), 2);
    // A week is clamped to a day.
    s.retry_after.store(7 * 86_400, Ordering::SeqCst);
    s.manager.due(&state, now + 200).await;
    assert_eq!(
        s.manager.ari.map(|(_, recheck)| recheck - (now + 200)),
        Some(86_400)
    );
    // The same certificate always gets the same time in the window.
    assert_eq!(s.manager.due(&state, now + 300).await, due);
}

#[tokio::test]
async fn a_failure_back_off_outlasts_the_window_and_replaces_is_sent_once() {
    let now = now();
    let mut s = setup((now - 100, now + 100)).await;
    let mut state = RenewalState::default();
    assert!(s.manager.due(&state, now).await <= now + 100);
    state.next_attempt = Some(now + 600);
    assert_eq!(s.manager.due(&state, now).await, now + 600);

    let id = s
        .manager
        .replaces(&state)
        .expect("names the certificate it renews");
    state.replaced = Some(id.to_string());
    assert!(
        s.manager.replaces(&state).is_none(),
        "replaces is sent once"
    );
}
