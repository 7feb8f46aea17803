//! The injector's self-managed certificate against an in-process Kubernetes API (real JSON
//! through kube's client, resourceVersion conflicts as the real server returns them): one
//! leader stores the certificate and the caBundle, every replica serves it, renewal and
//! failover happen on time, and a client trusting the caBundle completes a real handshake; the
//! caBundle is set by a JSON Patch of those fields alone, a CA rotation keeps every served leaf
//! trusted, and the Secret and Lease are owned by the webhook configuration.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use wss_sidecar::certs::CertStore;
use wss_sidecar::injector::selfcert::{Manager, Objects, Role};
use wss_sidecar::k8s::{ApiError, SecretApi};
use wss_sidecar::metrics::Metrics;
use wss_sidecar::tls::{self, Resolver};

use crate::support::fake_api::FakeApi;
use crate::support::{client_config, install_crypto_provider, peer_leaf, tls_connect};

const NS: &str = "wss-sidecar";
const SECRET: &str = "/api/v1/namespaces/wss-sidecar/secrets/injector-tls";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/wss-sidecar/leases/injector-cert";
const WEBHOOK: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/wss-sidecar-injector";
const SERVICE: &str = "wss-sidecar-injector.wss-sidecar.svc";
const DAY: Duration = Duration::from_secs(86_400);

/// `FakeApi::writes` counts the seeding of the Secret as the chart makes it.
const SEEDED: usize = 1;

/// The webhook configuration's uid, which the Secret's and Lease's ownerReferences name.
const WEBHOOK_UID: &str = "6d1f2c3e-0000-4000-8000-00000000c0de";

/// A fake API holding the webhook configuration as Helm installs it (no caBundle), with two
/// webhooks and fields of a newer API than k8s-openapi knows.
async fn cluster() -> FakeApi {
    let api = FakeApi::start().await;
    let hook = |name: &str| {
        json!({
            "name": name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "futureField": {"kept": true},
            "clientConfig": {"service": {"name": "wss-sidecar-injector", "namespace": NS, "path": "/mutate"}}
        })
    };
    api.seed(
        WEBHOOK,
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "wss-sidecar-injector", "uid": WEBHOOK_UID},
            "webhooks": [hook("inject.wss-sidecar.io"), hook("second.wss-sidecar.io")]
        }),
    );
    // The Secret and Lease as the chart makes them (the injector never creates them), under
    // the names these tests use and the chart's.
    for prefix in ["injector", "wss-sidecar-injector"] {
        api.seed(
            &format!("/api/v1/namespaces/{NS}/secrets/{prefix}-tls"),
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": format!("{prefix}-tls"), "namespace": NS}}),
        );
        api.seed(
            &format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{prefix}-cert"),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": format!("{prefix}-cert"), "namespace": NS}}),
        );
    }
    api
}

async fn kube_api(api: &FakeApi) -> Objects {
    let stop = tokio_util::sync::CancellationToken::new();
    let (secret, lease, webhook) = ("injector-tls", "injector-cert", "wss-sidecar-injector");
    Objects::kube_owned(api.client(), NS, secret, lease, webhook, &stop)
        .await
        .expect("the webhook configuration exists")
}

/// One replica: its manager and the store its handshakes read.
async fn replica(api: &FakeApi, identity: &str) -> (Manager, Arc<CertStore>) {
    let store = CertStore::new(Arc::new(Metrics::new()));
    let publisher = store.register("self-managed");
    let names = vec![SERVICE.to_string()];
    (
        Manager::new(kube_api(api).await, identity.into(), names, publisher),
        store,
    )
}

fn secret_data(api: &FakeApi, key: &str) -> Vec<u8> {
    let secret = api.get(SECRET).expect("the Secret exists");
    let encoded = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key}: {secret}"));
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap()
}

fn ca_bundle(api: &FakeApi) -> Value {
    api.get(WEBHOOK).unwrap()["webhooks"][0]["clientConfig"]["caBundle"].clone()
}

/// The leaf a replica serves, read through a real TLS handshake by a client that trusts only
/// the webhook's caBundle (as the API server does).
async fn served_leaf(api: &FakeApi, store: &Arc<CertStore>) -> CertificateDer<'static> {
    install_crypto_provider();
    let bundle = ca_bundle(api);
    let pem = base64::engine::general_purpose::STANDARD
        .decode(bundle.as_str().expect("caBundle set"))
        .unwrap();
    let cas: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .unwrap();
    let config = tls::server_config(Arc::new(Resolver::new(Arc::clone(store))), None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await;
    });
    let stream = tls_connect(addr, SERVICE, client_config(&cas, &[b"http/1.1"]))
        .await
        .expect("a client trusting the caBundle accepts the served certificate");
    let leaf = peer_leaf(&stream);
    drop(stream);
    let _ = server.await;
    leaf
}

#[tokio::test]
async fn one_leader_stores_the_certificate_and_ca_bundle_and_every_replica_serves_it() {
    let api = cluster().await;
    let (mut a, store_a) = replica(&api, "injector-a").await;
    let (mut b, store_b) = replica(&api, "injector-b").await;
    let now = SystemTime::now();
    assert_eq!(a.reconcile(now).await.unwrap(), Role::Leader);
    assert_eq!(b.reconcile(now).await.unwrap(), Role::Follower);

    let secret = api.get(SECRET).unwrap();
    // The chart's Secret: the injector writes its keys and never creates it.
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret_data(&api, "ca.crt"), {
        let bundle = ca_bundle(&api);
        base64::engine::general_purpose::STANDARD
            .decode(bundle.as_str().unwrap())
            .unwrap()
    });
    let leaf_a = served_leaf(&api, &store_a).await;
    let leaf_b = served_leaf(&api, &store_b).await;
    assert_eq!(leaf_a, leaf_b, "both replicas serve the stored certificate");

    // Nothing changes on the next passes: no writes but the leader's Lease renewals.
    let (secret_writes, webhook_writes) = (api.writes(SECRET), api.writes(WEBHOOK));
    a.reconcile(now + Duration::from_secs(10)).await.unwrap();
    b.reconcile(now + Duration::from_secs(10)).await.unwrap();
    assert_eq!(api.writes(SECRET), secret_writes);
    assert_eq!(api.writes(WEBHOOK), webhook_writes);
}

#[tokio::test]
async fn the_leaf_is_renewed_before_expiry_and_reloaded_without_a_new_ca_bundle() {
    let api = cluster().await;
    let (mut a, store_a) = replica(&api, "injector-a").await;
    let (mut b, store_b) = replica(&api, "injector-b").await;
    let now = SystemTime::now();
    a.reconcile(now).await.unwrap();
    b.reconcile(now).await.unwrap();
    let before = not_after(&store_b);
    let bundle = ca_bundle(&api);
    let webhook_writes = api.writes(WEBHOOK);

    // 61 of 90 days later the leaf has less than 30 left: the leader renews it. (Checked on
    // the stores: a handshake would judge the future certificate by today's clock.)
    let later = now + 61 * DAY;
    assert_eq!(a.reconcile(later).await.unwrap(), Role::Leader);
    b.reconcile(later).await.unwrap();
    assert_eq!(ca_bundle(&api), bundle, "the CA and so the caBundle stay");
    assert_eq!(api.writes(WEBHOOK), webhook_writes);
    let renewed = not_after(&store_b);
    assert!(
        renewed >= before + 60 * 86_400,
        "the follower reloaded the renewed certificate"
    );
    assert_eq!(not_after(&store_a), renewed);
}

/// The notAfter of the certificate a replica's handshakes would get now.
fn not_after(store: &Arc<CertStore>) -> i64 {
    let schemes = [rustls::SignatureScheme::ECDSA_NISTP256_SHA256];
    store
        .snapshot()
        .select(Some(SERVICE), &schemes)
        .expect("a certificate is served")
        .not_after
}

#[tokio::test]
async fn a_silent_leader_is_replaced_after_the_lease_expires() {
    let api = cluster().await;
    let (mut a, _) = replica(&api, "injector-a").await;
    let (mut b, _) = replica(&api, "injector-b").await;
    let now = SystemTime::now();
    assert_eq!(a.reconcile(now).await.unwrap(), Role::Leader);
    assert_eq!(
        b.reconcile(now + Duration::from_secs(20)).await.unwrap(),
        Role::Follower
    );
    assert_eq!(
        b.reconcile(now + Duration::from_secs(31)).await.unwrap(),
        Role::Leader
    );
    assert_eq!(
        api.get(LEASE).unwrap()["spec"]["holderIdentity"],
        "injector-b"
    );
    assert_eq!(
        a.reconcile(now + Duration::from_secs(32)).await.unwrap(),
        Role::Follower
    );
}

#[tokio::test]
async fn a_changed_ca_bundle_is_put_back() {
    let api = cluster().await;
    let (mut a, _) = replica(&api, "injector-a").await;
    let now = SystemTime::now();
    a.reconcile(now).await.unwrap();
    let bundle = ca_bundle(&api);
    let mut webhook = api.get(WEBHOOK).unwrap();
    webhook["webhooks"][0]["clientConfig"]["caBundle"] = json!("AAAA");
    api.seed(WEBHOOK, webhook);
    a.reconcile(now + Duration::from_secs(10)).await.unwrap();
    assert_eq!(ca_bundle(&api), bundle);
}

/// The caBundle is set with a JSON Patch of the caBundle fields alone (never a PUT of the
/// whole object), so what k8s-openapi does not know survives, on every webhook of the
/// configuration.
#[tokio::test]
async fn the_ca_bundle_is_patched_alone_keeping_fields_the_client_does_not_know() {
    let api = cluster().await;
    let (mut a, _) = replica(&api, "injector-a").await;
    a.reconcile(SystemTime::now()).await.unwrap();
    let webhook = api.get(WEBHOOK).unwrap();
    let ca = secret_data(&api, "ca.crt");
    for hook in webhook["webhooks"].as_array().unwrap() {
        assert_eq!(hook["futureField"], json!({"kept": true}), "{webhook:#}");
        let bundle = base64::engine::general_purpose::STANDARD
            .decode(hook["clientConfig"]["caBundle"].as_str().unwrap())
            .unwrap();
        assert_eq!(bundle, ca);
    }
    assert_eq!(api.requests_matching(&format!("PUT {WEBHOOK}")), 0);
    assert_eq!(api.requests_matching(&format!("PATCH {WEBHOOK}")), 1);
    assert_eq!(
        api.unconditional_writes_to(WEBHOOK),
        0,
        "the patch names its version"
    );
}

/// The Secret and the Lease name the webhook configuration (its uid) as their owner, so the
/// garbage collector deletes them with it (`helm uninstall`).
#[tokio::test]
async fn the_secret_and_lease_are_owned_by_the_webhook_configuration() {
    let api = cluster().await;
    let (mut a, _) = replica(&api, "injector-a").await;
    a.reconcile(SystemTime::now()).await.unwrap();
    for path in [SECRET, LEASE] {
        let object = api.get(path).unwrap();
        let owners = &object["metadata"]["ownerReferences"];
        assert_eq!(
            owners,
            &json!([{
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "name": "wss-sidecar-injector",
                "uid": WEBHOOK_UID,
            }]),
            "{path}: {object:#}"
        );
    }
}

/// A CA rotation asked for through the Secret (`rotate-ca`) between a leader and a follower:
/// after every pass of either, the leaf each serves is accepted by a client trusting only the
/// caBundle, and at the end only the new CA is in it.
#[tokio::test]
async fn a_ca_rotation_keeps_every_served_leaf_trusted() {
    let api = cluster().await;
    let (mut a, store_a) = replica(&api, "injector-a").await;
    let (mut b, store_b) = replica(&api, "injector-b").await;
    let start = SystemTime::now();
    let at = |s: u64| start + Duration::from_secs(s);
    a.reconcile(at(0)).await.unwrap();
    b.reconcile(at(0)).await.unwrap();
    let first_ca = secret_data(&api, "ca.crt");
    let first_leaf = served_leaf(&api, &store_b).await;
    let mut secret = api.get(SECRET).unwrap();
    secret["data"]["rotate-ca"] = json!(base64::engine::general_purpose::STANDARD.encode("now"));
    api.seed(SECRET, secret);

    let mut leaves = Vec::new();
    for (second, leader_first) in [
        (10, true),
        (20, true),
        (30, false),
        (95, true),
        (105, false),
    ] {
        let (first, then) = if leader_first {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        first.reconcile(at(second)).await.unwrap();
        // Between the two replicas' passes too.
        leaves.push(served_leaf(&api, &store_a).await);
        leaves.push(served_leaf(&api, &store_b).await);
        then.reconcile(at(second)).await.unwrap();
        leaves.push(served_leaf(&api, &store_a).await);
        leaves.push(served_leaf(&api, &store_b).await);
    }
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca_bundle(&api).as_str().unwrap())
        .unwrap();
    let last_ca = secret_data(&api, "ca.crt");
    assert_eq!(pem, last_ca, "only the new CA is left in the caBundle");
    assert_ne!(last_ca, first_ca, "the CA was rotated");
    assert!(
        secret_data(&api, "rotate-ca").is_empty(),
        "the request is cleared"
    );
    assert!(
        leaves.contains(&first_leaf),
        "the old leaf served during the overlap"
    );
    assert_ne!(
        leaves.last(),
        Some(&first_leaf),
        "the new leaf served at the end"
    );
}

#[tokio::test]
async fn racing_replicas_get_one_leader_and_stale_writes_conflict() {
    let api = cluster().await;
    let (mut a, _) = replica(&api, "injector-a").await;
    let (mut b, _) = replica(&api, "injector-b").await;
    let now = SystemTime::now();
    let (ra, rb) = tokio::join!(a.reconcile(now), b.reconcile(now));
    let roles = [ra.unwrap(), rb.unwrap()];
    assert_eq!(
        roles.iter().filter(|r| **r == Role::Leader).count(),
        1,
        "{roles:?}"
    );
    assert_eq!(
        api.writes(SECRET),
        SEEDED + 1,
        "one certificate, not one per replica"
    );

    let direct = kube_api(&api).await;
    let err = direct
        .secret
        .update(Default::default(), "1")
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Conflict), "{err}");
}

/// With the chart's Role and ClusterRole in force (`manifests/wss-sidecar.yaml`), leadership,
/// the first certificate, the caBundle and a renewal (a merge patch of the Secret: the crate's
/// one Secret write) are all allowed, and every rule is needed by one of them.
#[tokio::test]
async fn the_charts_rbac_allows_exactly_what_the_self_managed_certificate_does() {
    const SECRET: &str = "/api/v1/namespaces/wss-sidecar/secrets/wss-sidecar-injector-tls";
    let api = cluster().await;
    let (namespace, rules, cluster_rules) = crate::support::rbac::injector_roles();
    assert_eq!(namespace, NS);
    api.enforce_role(&namespace, rules);
    api.enforce_cluster_role(cluster_rules);
    let replica = async |identity: &str| {
        let store = CertStore::new(Arc::new(Metrics::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let objects = Objects::kube_owned(
            api.client(),
            NS,
            "wss-sidecar-injector-tls",
            "wss-sidecar-injector-cert",
            "wss-sidecar-injector",
            &stop,
        )
        .await
        .expect("the webhook configuration exists");
        let names = vec![SERVICE.to_string()];
        Manager::new(
            objects,
            identity.into(),
            names,
            store.register("self-managed"),
        )
    };
    let (mut a, mut b) = (replica("injector-a").await, replica("injector-b").await);
    let now = SystemTime::now();
    assert_eq!(a.reconcile(now).await.unwrap(), Role::Leader);
    assert_eq!(b.reconcile(now).await.unwrap(), Role::Follower);
    assert_eq!(a.reconcile(now + 61 * DAY).await.unwrap(), Role::Leader);
    assert_eq!(api.writes(SECRET), SEEDED + 2, "issued, then renewed");
    assert_eq!(
        api.unconditional_writes(),
        0,
        "every write names its version"
    );
    assert_eq!(api.denied(), vec![], "the chart's RBAC allowed it all");
    assert_eq!(
        api.unused_rules(),
        Vec::<usize>::new(),
        "every rule was needed"
    );
}

/// The real binary in its default mode (no --cert-dir) against the fake cluster: it makes its
/// certificate, sets the caBundle, and answers an AdmissionReview over HTTPS that a client
/// trusting only that caBundle accepts: what the API server does after `helm install`.
#[tokio::test]
async fn the_binary_manages_its_own_certificate_and_serves_reviews() {
    use std::process::Stdio;

    use crate::support::child::{Process, spawn_collector};
    use crate::support::injector::{admission_review, https_request};
    use crate::support::process::binary;

    let api = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: \"http://{}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n",
            api.addr
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(binary())
        .args(["injector", "--namespace", NS, "--pod-name", "injector-0"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args([
            "--self-cert-secret",
            "injector-tls",
            "--self-cert-lease",
            "injector-cert",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wss-sidecar injector");
    let output = Arc::new(std::sync::Mutex::new(Vec::new()));
    let serving = spawn_collector(child.stderr.take(), &output, "injector serving");
    spawn_collector(child.stdout.take(), &output, "");
    let injector = Process {
        name: "wss-sidecar injector",
        child,
        output,
    };
    let line = injector
        .wait_for_line(serving, Duration::from_secs(20))
        .await;
    let log: Value = serde_json::from_str(&line).expect("a JSON log line");
    let addr: std::net::SocketAddr = log["listen"].as_str().unwrap().parse().unwrap();

    crate::support::wait_until("the caBundle is set", Duration::from_secs(20), || async {
        ca_bundle(&api).is_string()
    })
    .await;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca_bundle(&api).as_str().unwrap())
        .unwrap();
    let client = client_config(
        &[CertificateDer::from_pem_slice(&pem).unwrap()],
        &[b"http/1.1"],
    );
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "apps", "labels": {"wss-sidecar.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "app"}]}
    });
    let review = serde_json::to_vec(&admission_review("u-9", "apps", &pod)).unwrap();
    // The leader serves its certificate before it sets the caBundle: one try is enough.
    let (status, body) = https_request(addr, client, "POST", "/mutate", &review).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(answer["response"]["patch"].is_string(), "{answer}");
    assert_eq!(
        api.get(LEASE).unwrap()["spec"]["holderIdentity"],
        "injector-0"
    );
}
