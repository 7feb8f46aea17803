//! The chart's monitoring objects installed for real (the Prometheus Operator's CRDs from
//! `scripts/prometheus-operator-crds`) find what they are meant to scrape (issue 15): the
//! PodMonitor's selector, applied by the apiserver, lists a pod the injector patched, in
//! another namespace, and that pod's port of the PodMonitor's name serves the sidecar's
//! metrics; the ServiceMonitor's selector picks the injector's Service, whose port of the
//! ServiceMonitor's name leads to injectors that counted the admission.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::support::cluster::{
    ChartRelease, Cluster, SIDECAR_IMAGE, items, pod_ip, str_at, yaml_string,
};
use crate::support::proxy::Metrics;
use crate::support::{http_get, poll_until};

/// How long a sidecar's admin port may take to answer after its pod is Ready.
const SCRAPE_WAIT: Duration = Duration::from_secs(30);

/// Every monitoring object on; the dashboard in the release's namespace.
const MONITORING: &str = "monitoring.podMonitor.enabled=true,monitoring.serviceMonitor.enabled=true,\
                          monitoring.prometheusRule.enabled=true,monitoring.dashboard.enabled=true";

async fn install_crds(cluster: &Cluster) {
    let dir = cluster
        .kubeconfig()
        .parent()
        .expect("the kubeconfig is in the cluster's directory")
        .to_path_buf();
    let out = Command::new(cluster.root().join("scripts/prometheus-operator-crds"))
        .arg(dir)
        .current_dir(cluster.root())
        .kill_on_drop(true)
        .output()
        .await
        .expect("scripts/prometheus-operator-crds runs");
    assert!(
        out.status.success(),
        "scripts/prometheus-operator-crds: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `matchLabels` as a `kubectl -l` selector.
fn selector(object: &Value) -> String {
    let labels = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no spec.selector.matchLabels: {object:#}"));
    assert!(!labels.is_empty(), "an empty selector selects everything");
    labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().expect("label values are strings")))
        .collect::<Vec<_>>()
        .join(",")
}

/// The port number of the port named `name` among `ports` (container or Service ports).
fn port_named(ports: &Value, name: &str, field: &str) -> Option<u16> {
    ports
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p[field].as_u64())
        .and_then(|p| u16::try_from(p).ok())
}

/// Scrapes `addr` until it answers, then parses it as Prometheus text.
async fn scrape(addr: SocketAddr) -> Metrics {
    let body = std::cell::RefCell::new(None);
    let body_ref = &body;
    let answered = poll_until(SCRAPE_WAIT, || async move {
        match http_get(addr, "/metrics").await {
            Ok((200, text)) => {
                *body_ref.borrow_mut() = Some(text);
                true
            }
            _ => false,
        }
    })
    .await;
    assert!(answered, "no /metrics at {addr} within {SCRAPE_WAIT:?}");
    Metrics::parse(&body.into_inner().expect("answered"))
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_monitoring_selects_injected_pods_and_the_injector() {
    let cluster = Cluster::shared().await;
    install_crds(&cluster).await;
    let release = ChartRelease::install(&cluster, "wss-monitoring", &["--set", MONITORING]).await;
    let ns = &release.ns.name;
    for kind in ["podmonitors", "servicemonitors", "prometheusrules"] {
        let list = cluster.get_json(Some(ns), &[kind]).await.expect(kind);
        assert_eq!(items(&list).len(), 1, "one {kind} installed");
    }
    let dashboards = cluster
        .get_json(Some(ns), &["configmaps", "-l", "grafana_dashboard=1"])
        .await
        .expect("ConfigMaps");
    assert_eq!(items(&dashboards).len(), 1, "the dashboard ConfigMap");

    // A real pod, injected by the real apiserver's call of the webhook, in another namespace.
    let apps = cluster.namespace("monitored").await;
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: monitored\n  labels:\n    \
         wss-sidecar.io/inject: \"true\"\n  annotations:\n    \
         wss-sidecar.io/upstream-port: \"8080\"\nspec:\n  containers:\n    \
         - name: app\n      image: {}\n      args: [\"echo\", \"--listen\", \"127.0.0.1:8080\"]\n",
        yaml_string(SIDECAR_IMAGE)
    );
    cluster.apply(&apps.name, &pod).await;
    let ready = cluster
        .wait_ready_pods(&apps.name, "wss-sidecar.io/inject=true", 1)
        .await;

    // The PodMonitor: for every namespace, and its selector lists exactly our pod there.
    let pod_monitors = cluster
        .get_json(Some(ns), &["podmonitors"])
        .await
        .expect("PodMonitor");
    let monitor = &items(&pod_monitors)[0];
    assert_eq!(
        monitor.pointer("/spec/namespaceSelector/any"),
        Some(&Value::Bool(true))
    );
    let selected = cluster
        .get_json(Some(&apps.name), &["pods", "-l", &selector(monitor)])
        .await
        .expect("pods");
    let selected = items(&selected);
    assert_eq!(selected.len(), 1, "the PodMonitor selects the injected pod");
    assert_eq!(
        str_at(&selected[0], "/metadata/uid"),
        str_at(&ready[0], "/metadata/uid")
    );
    let port_name = str_at(monitor, "/spec/podMetricsEndpoints/0/port");
    let path = str_at(monitor, "/spec/podMetricsEndpoints/0/path");
    assert_eq!(path, "/metrics");
    let sidecar = selected[0]
        .pointer("/spec/initContainers")
        .or_else(|| selected[0].pointer("/spec/containers"))
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["name"] == "wss-sidecar"))
        .unwrap_or_else(|| panic!("no wss-sidecar container: {:#}", selected[0]));
    let port = port_named(&sidecar["ports"], port_name, "containerPort")
        .unwrap_or_else(|| panic!("the sidecar has no port {port_name}: {sidecar:#}"));
    let metrics = scrape(SocketAddr::new(pod_ip(&selected[0]), port)).await;
    assert!(
        metrics
            .scrape
            .samples
            .iter()
            .any(|s| s.metric == "wss_sidecar_handshake_duration_seconds"),
        "the sidecar's port {port_name} serves its metrics"
    );

    // The ServiceMonitor: its selector picks the injector's Service, whose named port leads to
    // the injector pods' admin port; together they counted our pod's patch.
    let service_monitors = cluster
        .get_json(Some(ns), &["servicemonitors"])
        .await
        .expect("ServiceMonitor");
    let monitor = &items(&service_monitors)[0];
    let services = cluster
        .get_json(Some(ns), &["services", "-l", &selector(monitor)])
        .await
        .expect("Services");
    let services = items(&services);
    assert_eq!(
        services.len(),
        1,
        "the ServiceMonitor selects the injector's Service"
    );
    let port_name = str_at(monitor, "/spec/endpoints/0/port");
    let service_ports = &services[0]["spec"]["ports"];
    assert!(
        port_named(service_ports, port_name, "port").is_some(),
        "the Service has no port {port_name}: {service_ports}"
    );
    let target = service_ports
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == port_name))
        .map(|p| p["targetPort"].clone())
        .expect("the port");
    let injectors = cluster
        .get_json(Some(ns), &["pods", "-l", "wss-sidecar.io/injector=true"])
        .await
        .expect("injector pods");
    let mut patched = 0.0;
    for injector in items(&injectors) {
        let ports = &injector["spec"]["containers"][0]["ports"];
        let port = match &target {
            Value::String(name) => port_named(ports, name, "containerPort"),
            number => number.as_u64().and_then(|p| u16::try_from(p).ok()),
        }
        .unwrap_or_else(|| panic!("the injector has no port {target}: {ports}"));
        let metrics = scrape(SocketAddr::new(pod_ip(injector), port)).await;
        patched += metrics.value(
            "wss_sidecar_injector_admissions_total",
            &[("decision", "patched")],
        );
    }
    assert!(patched >= 1.0, "the injectors counted the patch of our pod");
}
