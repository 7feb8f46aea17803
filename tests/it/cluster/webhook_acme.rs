//! Issue 14, acceptance 1 and 2, on the one-node cluster with the chart installed:
//! `manifests/examples/echo-acme.yaml` pointed at Pebble (a host process on the Node address),
//! whose DNS answers the name with the Service's LoadBalancer address. From an empty store both
//! replicas become Ready with one order placed, by TLS-ALPN-01 and by HTTP-01 (a port-80
//! Service port to `wss-http`), and the app containers start within seconds of their pods.
//! With DNS pointing at an address where nothing listens, no challenge is submitted, logs and
//! metrics say why, and once DNS is fixed the certificate arrives within a minute with no CA
//! back-off.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::cluster::{
    ChartRelease, Cluster, POD_START, pod_ip, str_at, ws_connect_retrying,
};
use crate::support::pebble::Pebble;
use crate::support::proxy::Metrics;
use crate::support::{assert_echo, client_config, http_get, install_crypto_provider, wait_until};

use super::{SidecarPod, pebble_for_pods};

/// The name the example orders, resolved by Pebble's DNS.
const NAME: &str = "echo.acme.test";
/// An address of the cluster's load-balancer range that no Service has: nothing listens.
const NOWHERE: &str = "10.250.0.250";
/// The app container must start this soon after its pod: never held back by the CA.
const APP_START: Duration = Duration::from_secs(15);
/// From the DNS fix to the certificate served (acceptance 2).
const AFTER_FIX: Duration = Duration::from_secs(60);

const SELF_CHECK_FAILURES: &str = "wss_sidecar_acme_self_check_failures_total";
const ORDERS: &str = "wss_sidecar_acme_orders_total";

/// Which challenge the example answers.
#[derive(Clone, Copy, PartialEq)]
enum Challenge {
    TlsAlpn01,
    Http01,
}

#[tokio::test(flavor = "multi_thread")]
async fn first_certificate_behind_the_load_balancer_by_tls_alpn_01_and_http_01() {
    install_crypto_provider();
    let cluster = Cluster::shared().await;
    let release = ChartRelease::install(&cluster, "wss-system", &[]).await;
    for challenge in [Challenge::TlsAlpn01, Challenge::Http01] {
        let prefix = match challenge {
            Challenge::TlsAlpn01 => "echo-acme-tls",
            Challenge::Http01 => "echo-acme-http",
        };
        let ns = cluster.namespace(prefix).await;
        let pebble = pebble_for_pods(&cluster, &ns.name, 443, 80).await;
        let deployed = std::time::Instant::now();
        let ip = deploy(&cluster, &ns.name, &pebble, challenge).await;
        pebble.set_a(NAME, &ip.to_string()).await;
        let pods =
            serves_the_certificate(&cluster, &ns.name, &pebble, ip, Duration::from_secs(120)).await;
        println!(
            "{prefix}: certificate served {:?} after the apply",
            deployed.elapsed()
        );
        assert_eq!(
            pebble.requests_logged("POST /order-plz"),
            1,
            "one order for both replicas"
        );
        assert_eq!(
            pebble.challenges_submitted(),
            1,
            "one challenge, submitted once"
        );
        for pod in &pods {
            app_started_with_the_pod(pod);
        }
    }
    drop(release);
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_pointing_nowhere_submits_nothing_and_the_fix_needs_no_back_off() {
    install_crypto_provider();
    let cluster = Cluster::shared().await;
    let release = ChartRelease::install(&cluster, "wss-system", &[]).await;
    let ns = cluster.namespace("echo-acme").await;
    let pebble = pebble_for_pods(&cluster, &ns.name, 443, 80).await;
    pebble.set_a(NAME, NOWHERE).await;
    let ip = deploy(&cluster, &ns.name, &pebble, Challenge::TlsAlpn01).await;

    // The replica that orders counts its failing self-checks, and logs why.
    let pods = cluster.wait_ready_pods(&ns.name, "app=echo-acme", 2).await;
    let admins: Vec<SocketAddr> = pods
        .iter()
        .map(|p| SocketAddr::new(pod_ip(p), 9090))
        .collect();
    wait_until(
        "a replica counts two failed self-checks",
        Duration::from_secs(90),
        || {
            let admins = admins.clone();
            async move { sum(&admins, SELF_CHECK_FAILURES, &[("reason", "connect")]).await >= 2.0 }
        },
    )
    .await;
    assert_eq!(pebble.challenges_submitted(), 0, "no challenge submitted");
    let logs: String = pods
        .iter()
        .map(|p| {
            let (name, uid) = (str_at(p, "/metadata/name"), str_at(p, "/metadata/uid"));
            let log = cluster.container_log(&ns.name, name, uid, "wss-sidecar");
            std::fs::read_to_string(&log).unwrap_or_default()
        })
        .collect();
    assert!(
        logs.contains("self-check failed") && logs.contains(NOWHERE),
        "the logs say why: {logs}"
    );

    pebble.set_a(NAME, &ip.to_string()).await;
    let fixed = std::time::Instant::now();
    serves_the_certificate(&cluster, &ns.name, &pebble, ip, AFTER_FIX).await;
    println!("certificate served {:?} after the DNS fix", fixed.elapsed());
    assert_eq!(
        pebble.challenges_submitted(),
        1,
        "submitted once, when right"
    );
    assert_eq!(sum(&admins, ORDERS, &[("result", "failure")]).await, 0.0);
    assert_eq!(
        sum(&admins, "wss_sidecar_acme_consecutive_failures", &[]).await,
        0.0,
        "no CA back-off"
    );
    drop(release);
}

/// The same mechanics without the injector: two hand-written pods (the sidecar as a native
/// sidecar, as `SidecarPod` writes it) behind the example's LoadBalancer Service, sharing the
/// example's Secret store under its Role.
#[tokio::test(flavor = "multi_thread")]
async fn hand_written_replicas_behind_the_load_balancer_get_one_certificate() {
    install_crypto_provider();
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("acme-by-hand").await;
    let pebble = pebble_for_pods(&cluster, &ns.name, 443, 80).await;
    // The example's ServiceAccount, Role, RoleBinding and Service; not its Deployment.
    let example = example(&ns.name, &pebble, Challenge::TlsAlpn01);
    let others: Vec<&str> = example
        .split("\n---\n")
        .filter(|doc| !doc.contains("kind: Deployment"))
        .collect();
    cluster.apply(&ns.name, &others.join("\n---\n")).await;
    let ip = cluster.load_balancer_ip(&ns.name, "echo-acme").await;
    pebble.set_a(NAME, &ip.to_string()).await;
    let directory = format!("--acme-directory={}", pebble.directory);
    let resolver = format!("--acme-resolver={}", pebble.dns());
    let args = [
        &format!("--acme-domain={NAME}")[..],
        &directory,
        "--acme-ca-root=/pebble/root.pem",
        "--acme-store=secret:echo-acme-acme",
        "--acme-email=ops@acme.test",
        &resolver,
    ];
    let pod = SidecarPod {
        init_before: "",
        mounts: "        - { name: pebble-root, mountPath: /pebble, readOnly: true }\n",
        volumes: "    - name: pebble-root\n      configMap: { name: pebble-root }\n",
    };
    for name in ["echo-acme-0", "echo-acme-1"] {
        let yaml = pod.yaml(name, "app: echo-acme", "echo-acme", &args);
        cluster.apply(&ns.name, &yaml).await;
    }
    let pods =
        serves_the_certificate(&cluster, &ns.name, &pebble, ip, Duration::from_secs(120)).await;
    assert_eq!(pebble.requests_logged("POST /order-plz"), 1, "one order");
    assert_eq!(
        pebble.challenges_submitted(),
        1,
        "one challenge, submitted once"
    );
    let admins: Vec<SocketAddr> = pods
        .iter()
        .map(|p| SocketAddr::new(pod_ip(p), 9090))
        .collect();
    assert_eq!(sum(&admins, ORDERS, &[("result", "success")]).await, 1.0);
    for pod in &pods {
        app_started_with_the_pod(pod);
    }
}

/// Applies the example in `ns` (where `pebble`'s root is), pointed at `pebble`, answering `challenge`; returns the
/// Service's LoadBalancer address.
async fn deploy(cluster: &Cluster, ns: &str, pebble: &Pebble, challenge: Challenge) -> IpAddr {
    cluster.apply(ns, &example(ns, pebble, challenge)).await;
    cluster.load_balancer_ip(ns, "echo-acme").await
}

/// `manifests/examples/echo-acme.yaml` in `ns`, after the store objects it needs made first
/// (`echo-acme-store.yaml`: the sidecar's Role cannot create them), with Pebble as its CA and
/// resolver; for HTTP-01 with `--http-listen` and a port-80 Service port to `wss-http`.
fn example(ns: &str, pebble: &Pebble, challenge: Challenge) -> String {
    let read = |file: &str| {
        let path = format!("{}/manifests/examples/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).expect("the example")
    };
    let text = format!(
        "{}---\n{}",
        read("echo-acme-store.yaml"),
        read("echo-acme.yaml")
    );
    let mut annotations = format!(
        "        wss-sidecar.io/acme-directory: {directory}\n\
         \x20       wss-sidecar.io/acme-ca-root: /pebble/root.pem\n\
         \x20       wss-sidecar.io/mounts: \"configMap:pebble-root:/pebble\"\n\
         \x20       wss-sidecar.io/acme-resolver: \"{dns}\"\n",
        directory = pebble.directory,
        dns = pebble.dns(),
    );
    if challenge == Challenge::Http01 {
        annotations.push_str("        wss-sidecar.io/http-listen: \"[::]:8081\"\n");
    }
    let mut yaml = text
        .replace("namespace: default", &format!("namespace: {ns}"))
        .replace("echo.example.com", NAME)
        .replace(
            "        wss-sidecar.io/acme-directory: letsencrypt-staging\n",
            &annotations,
        );
    assert!(
        yaml.contains(&pebble.directory),
        "the example changed: {text}"
    );
    if challenge == Challenge::Http01 {
        let wss = "    - { name: wss, port: 443, targetPort: wss, protocol: TCP }\n";
        assert!(yaml.contains(wss), "the example's Service changed: {text}");
        yaml = yaml.replace(
            wss,
            &format!(
                "{wss}    - {{ name: http, port: 80, targetPort: wss-http, protocol: TCP }}\n"
            ),
        );
    }
    yaml
}

/// Waits until both replicas are Ready and serve a certificate from Pebble, through the
/// LoadBalancer and at each pod; returns the pods.
async fn serves_the_certificate(
    cluster: &Cluster,
    ns: &str,
    pebble: &Pebble,
    lb: IpAddr,
    within: Duration,
) -> Vec<Value> {
    let config = client_config(&pebble.issuer_roots().await, &[b"http/1.1"]);
    let mut ws = ws_connect_retrying(SocketAddr::new(lb, 443), NAME, config.clone(), within).await;
    assert_echo(&mut ws, Message::text("hello over the first certificate")).await;
    let pods = cluster.wait_ready_pods(ns, "app=echo-acme", 2).await;
    for pod in &pods {
        let addr = SocketAddr::new(pod_ip(pod), 8443);
        let mut ws = ws_connect_retrying(addr, NAME, config.clone(), POD_START).await;
        assert_echo(&mut ws, Message::text("hello from each replica")).await;
    }
    pods
}

/// The app container started within [`APP_START`] of the pod.
fn app_started_with_the_pod(pod: &Value) {
    let time = |pointer: &str| {
        let text = pod.pointer(pointer).and_then(Value::as_str).unwrap_or("");
        humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{pointer} {text:?}: {e}"))
    };
    let app = pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|s| s.iter().position(|c| c["name"] == "app"))
        .expect("the app container's status");
    let pod_start = time("/status/startTime");
    let app_start = time(&format!(
        "/status/containerStatuses/{app}/state/running/startedAt"
    ));
    let took = app_start.duration_since(pod_start).unwrap_or_default();
    println!("app container started {took:?} after its pod");
    assert!(took <= APP_START, "the app started {took:?} after its pod");
}

/// `name{labels}` summed over the replicas' admin endpoints (0 where unreachable).
async fn sum(admins: &[SocketAddr], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for admin in admins {
        if let Ok((200, body)) = http_get(*admin, "/metrics").await {
            total += Metrics::parse(&body).value(name, labels);
        }
    }
    total
}
