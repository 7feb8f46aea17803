//! Acceptance 2 (issue 15): the webhook's certificate changes while labelled pods are created
//! in a loop (one every 0.5 s, from before the change until every injector replica serves the
//! new certificate and the old CA has left the `caBundle`), and the real apiserver refuses none.
//! `certificate.source=helm`: `helm upgrade` reuses a valid Secret, and a due one is replaced
//! with both CAs in the `caBundle` until the kubelet has put the new pair in the injector's
//! volume. `certificate.source=self`: a CA rotation asked for through the Secret goes through
//! its three steps. Also in self mode: `helm upgrade`, `kubectl apply` of the rendered webhook
//! and `helm upgrade --force-replace` leave the `caBundle` the injector set.
//!
//! The creations are server-side dry runs: the webhook is `sideEffects: None`, so the apiserver
//! calls it (TLS against the `caBundle`, `failurePolicy: Fail`) and persists nothing. The
//! counts are printed (`--no-capture` shows them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use crate::support::cluster::{CHART_INSTALL, ChartRelease, Cluster, SIDECAR_IMAGE, items, str_at};
use crate::support::{client_config, install_crypto_provider, tls_connect};

/// One pod creation every this long (acceptance 2).
const EVERY: Duration = Duration::from_millis(500);
/// The injector's objects for release `wss-sidecar`.
const WEBHOOK: &str = "wss-sidecar-injector";
const SECRET: &str = "wss-sidecar-injector-tls";
/// How long the whole change may take: the kubelet's Secret volume refresh (about a minute and
/// a half here), or the self-managed rotation's three passes and 60 s overlap.
const CHANGE: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread")]
async fn webhook_rotation_helm_upgrade_refuses_no_pod() {
    install_crypto_provider();
    let cluster = Arc::new(Cluster::shared().await);
    let set = ["--set", "certificate.source=helm"];
    let release = ChartRelease::install(&cluster, "wss-rot-helm", &set).await;
    let ns = release.ns.name.clone();
    let apps = cluster.namespace("rot-helm-pods").await;
    let first = secret(&cluster, &ns).await;
    let first_ca = decode(str_at(&first, "/data/ca.crt"));
    assert_eq!(
        bundle(&cluster).await,
        first_ca,
        "the caBundle is the Secret's CA"
    );
    let admissions = Admissions::start(Arc::clone(&cluster), apps.name.clone());

    // An upgrade while the certificate is valid reuses it: nothing changes.
    upgrade(&cluster, &ns, &set).await;
    let reused = secret(&cluster, &ns).await;
    assert_eq!(
        str_at(&reused, "/data/tls.crt"),
        str_at(&first, "/data/tls.crt")
    );
    assert_eq!(bundle(&cluster).await, first_ca, "the caBundle stays");

    // Due for renewal (as two thirds of helmValidityDays later): the upgrade makes a new CA
    // and keeps the old one in the caBundle. (`--force-conflicts`: the annotation is
    // kubectl's now, and helm's server-side apply takes it back.)
    let forced = ["--set", "certificate.source=helm", "--force-conflicts"];
    annotate(&cluster, &ns, "wss-sidecar.io/renew-after=0").await;
    upgrade(&cluster, &ns, &forced).await;
    let renewed = secret(&cluster, &ns).await;
    let new_ca = decode(str_at(&renewed, "/data/ca.crt"));
    assert_ne!(new_ca, first_ca, "a new CA");
    assert_eq!(decode(str_at(&renewed, "/data/ca-previous.crt")), first_ca);
    let both = bundle(&cluster).await;
    assert!(
        contains(&both, &first_ca) && contains(&both, &new_ca),
        "both CAs in the caBundle"
    );
    wait_served_by_every_replica(&cluster, &ns, &new_ca).await;

    // The next upgrade after the overlap drops the old CA.
    annotate(&cluster, &ns, "wss-sidecar.io/previous-ca-until=0").await;
    upgrade(&cluster, &ns, &forced).await;
    assert_eq!(bundle(&cluster).await, new_ca, "only the new CA is left");
    let counts = admissions.stop().await;
    counts.assert_none_refused("helm upgrade with a renewal");
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_rotation_self_mode_ca_rotation_refuses_no_pod() {
    install_crypto_provider();
    let cluster = Arc::new(Cluster::shared().await);
    let release = ChartRelease::install(&cluster, "wss-rot-self", &[]).await;
    let ns = release.ns.name.clone();
    let apps = cluster.namespace("rot-self-pods").await;
    let first_ca = wait_ca_bundle_set(&cluster, &ns).await;
    let admissions = Admissions::start(Arc::clone(&cluster), apps.name.clone());

    let patch = r#"{"stringData":{"rotate-ca":"now"}}"#;
    let secret_arg = format!("secret/{SECRET}");
    cluster
        .kubectl_ok(&["patch", "-n", &ns, &secret_arg, "-p", patch])
        .await;
    // Done when the Secret holds a new CA alone, the caBundle is that CA alone, and every
    // replica serves a leaf under it.
    let deadline = tokio::time::Instant::now() + CHANGE;
    let new_ca = loop {
        let stored = secret(&cluster, &ns).await;
        let ca = decode(str_at(&stored, "/data/ca.crt"));
        let previous = str_at(&stored, "/data/ca-previous.crt");
        if ca != first_ca && previous.is_empty() && bundle(&cluster).await == ca {
            break ca;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotation did not finish within {CHANGE:?}: {stored:#}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    wait_served_by_every_replica(&cluster, &ns, &new_ca).await;
    let counts = admissions.stop().await;
    counts.assert_none_refused("self-managed CA rotation");
}

/// `helm upgrade` (server-side apply, helm 4's default), `kubectl apply` of the rendered
/// webhook configuration (a client-side 3-way merge) and `helm upgrade --force-replace` (a PUT
/// of the whole rendered object) each leave the caBundle the injector set, read at once after
/// each (before the injector's next pass could put it back), and refuse no pod meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn webhook_rotation_upgrades_and_applies_keep_the_self_managed_ca_bundle() {
    install_crypto_provider();
    let cluster = Arc::new(Cluster::shared().await);
    let release = ChartRelease::install(&cluster, "wss-rot-keep", &[]).await;
    let ns = release.ns.name.clone();
    let apps = cluster.namespace("rot-keep-pods").await;
    let ca = wait_ca_bundle_set(&cluster, &ns).await;
    let admissions = Admissions::start(Arc::clone(&cluster), apps.name.clone());

    upgrade(&cluster, &ns, &["--set", "lameDuckSeconds=11"]).await;
    assert_eq!(bundle(&cluster).await, ca, "helm upgrade kept the caBundle");

    let chart = cluster.root().join("helm/wss-sidecar");
    let rendered = cluster
        .helm_ok(&[
            "template",
            "wss-sidecar",
            chart.to_str().expect("utf-8 path"),
            "-n",
            &ns,
            "--show-only",
            "templates/mutatingwebhook.yaml",
        ])
        .await;
    assert!(
        !rendered.contains("caBundle"),
        "helm template cannot look it up:\n{rendered}"
    );
    let applied = cluster
        .kubectl_stdin(&["apply", "-f", "-"], &rendered)
        .await;
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert_eq!(
        bundle(&cluster).await,
        ca,
        "kubectl apply kept the caBundle"
    );

    let force = [
        "--force-replace",
        "--server-side=false",
        "--set",
        "lameDuckSeconds=12",
    ];
    upgrade(&cluster, &ns, &force).await;
    assert_eq!(
        bundle(&cluster).await,
        ca,
        "helm upgrade --force-replace kept the caBundle"
    );
    let counts = admissions.stop().await;
    counts.assert_none_refused("upgrades and applies in self mode");
}

/// Pod creations in a loop, one every [`EVERY`], each on its own task so a slow answer does
/// not slow the loop.
struct Admissions {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Counts>,
}

/// What the creations got.
#[derive(Debug, Default)]
struct Counts {
    /// Admitted with the sidecar injected.
    injected: usize,
    /// Admitted without it (the webhook was not called: must not happen with `Fail`).
    not_injected: usize,
    /// Refused: kubectl's message.
    refused: Vec<String>,
}

impl Admissions {
    fn start(cluster: Arc<Cluster>, ns: String) -> Admissions {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(EVERY);
            let mut creations = Vec::new();
            for i in 0.. {
                ticks.tick().await;
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let (cluster, ns) = (Arc::clone(&cluster), ns.clone());
                creations.push(tokio::spawn(async move { create(&cluster, &ns, i).await }));
            }
            let mut counts = Counts::default();
            for creation in creations {
                match creation.await.expect("a creation task") {
                    Ok(true) => counts.injected += 1,
                    Ok(false) => counts.not_injected += 1,
                    Err(message) => counts.refused.push(message),
                }
            }
            counts
        });
        Admissions { stop, task }
    }

    async fn stop(self) -> Counts {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the creation loop")
    }
}

impl Counts {
    fn assert_none_refused(&self, what: &str) {
        let total = self.injected + self.not_injected + self.refused.len();
        println!(
            "{what}: {total} pod creations, {} injected, {} admitted without the sidecar, {} refused",
            self.injected,
            self.not_injected,
            self.refused.len()
        );
        assert!(total >= 20, "{what}: only {total} creations");
        assert_eq!(
            self.refused,
            Vec::<String>::new(),
            "{what}: refused creations"
        );
        assert_eq!(
            self.not_injected, 0,
            "{what}: pods admitted without the sidecar"
        );
    }
}

/// A labelled pod created as a server-side dry run: `Ok(injected)`, or kubectl's message.
async fn create(cluster: &Cluster, ns: &str, i: usize) -> Result<bool, String> {
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: rotation-{i}\n  labels:\n    \
         wss-sidecar.io/inject: \"true\"\n  annotations:\n    \
         wss-sidecar.io/upstream-port: \"8080\"\nspec:\n  containers:\n    - name: app\n      \
         image: {SIDECAR_IMAGE}\n      args: [\"echo\", \"--listen\", \"127.0.0.1:8080\"]\n"
    );
    let output = cluster.create_dry_run(ns, &pod).await;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    let created: Value = serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
    Ok(str_at(&created, "/metadata/annotations/wss-sidecar.io~1status") == "injected")
}

async fn upgrade(cluster: &Cluster, ns: &str, args: &[&str]) {
    let chart = cluster.root().join("helm/wss-sidecar");
    let timeout = format!("{}s", CHART_INSTALL.as_secs());
    let mut upgrade = vec![
        "upgrade",
        "wss-sidecar",
        chart.to_str().expect("utf-8 path"),
        "-n",
        ns,
        "--wait",
        "--timeout",
        &timeout,
    ];
    upgrade.extend_from_slice(args);
    cluster.helm_ok(&upgrade).await;
}

async fn annotate(cluster: &Cluster, ns: &str, annotation: &str) {
    let secret = format!("secret/{SECRET}");
    cluster
        .kubectl_ok(&["annotate", "--overwrite", "-n", ns, &secret, annotation])
        .await;
}

async fn secret(cluster: &Cluster, ns: &str) -> Value {
    cluster
        .get_json(Some(ns), &["secret", SECRET])
        .await
        .expect("the injector's Secret")
}

/// The webhook's caBundle, decoded.
async fn bundle(cluster: &Cluster) -> Vec<u8> {
    let webhook = cluster
        .get_json(None, &["mutatingwebhookconfiguration", WEBHOOK])
        .await
        .expect("the webhook configuration");
    decode(str_at(&webhook, "/webhooks/0/clientConfig/caBundle"))
}

/// Waits for the injector to have set the caBundle to its Secret's CA; returns it.
async fn wait_ca_bundle_set(cluster: &Cluster, ns: &str) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + CHANGE;
    loop {
        if let Some(stored) = cluster.get_json(Some(ns), &["secret", SECRET]).await {
            let ca = decode(str_at(&stored, "/data/ca.crt"));
            if !ca.is_empty() && bundle(cluster).await == ca {
                return ca;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no caBundle within {CHANGE:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until every injector pod completes a handshake with a client that trusts only `ca`
/// (as the apiserver would with that caBundle).
async fn wait_served_by_every_replica(cluster: &Cluster, ns: &str, ca: &[u8]) {
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca)
        .collect::<Result<_, _>>()
        .expect("the CA parses");
    let config = client_config(&roots, &[b"http/1.1"]);
    let name = format!("{WEBHOOK}.{ns}.svc");
    let deadline = tokio::time::Instant::now() + CHANGE;
    loop {
        let pods = cluster
            .get_json(Some(ns), &["pods", "-l", "wss-sidecar.io/injector=true"])
            .await
            .unwrap_or_default();
        let mut serving = 0;
        let pods = items(&pods);
        for pod in pods {
            let port = pod["spec"]["containers"][0]["ports"]
                .as_array()
                .and_then(|ports| ports.iter().find(|p| p["name"] == "https"))
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or(8443);
            let Ok(ip) = str_at(pod, "/status/podIP").parse() else {
                continue;
            };
            let addr = SocketAddr::new(ip, u16::try_from(port).expect("a port"));
            if tls_connect(addr, &name, Arc::clone(&config)).await.is_ok() {
                serving += 1;
            }
        }
        if serving >= 2 && serving == pods.len() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{serving} of {} injector pods serve a leaf under the new CA after {CHANGE:?}",
            pods.len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn decode(b64: &str) -> Vec<u8> {
    BASE64.decode(b64).unwrap_or_default()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
