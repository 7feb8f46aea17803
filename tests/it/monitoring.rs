//! The chart's PrometheusRule and Grafana dashboard (ci/monitoring.yaml, rendered by the real
//! helm): every rule `expr` and every panel query parses as PromQL (the `promql-parser` crate)
//! and names only metrics that a real scrape of a running sidecar and injector exports.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::cluster::Cluster;
use crate::support::injector::{TestInjector, admission_review};
use crate::support::proxy::Metrics;
use crate::support::*;

/// The values file that turns every monitoring object on.
const VALUES: &str = "helm/wss-sidecar/ci/monitoring.yaml";

/// Grafana's built-in interval variables, which Grafana replaces before Prometheus sees the
/// query (docs: "Global variables", `$__rate_interval`); any other `$` fails the parse.
const GRAFANA_INTERVALS: [&str; 3] = ["$__rate_interval", "$__interval", "$__range"];

/// The chart rendered with [`VALUES`] by the cluster's helm: every object, as JSON.
async fn render() -> Vec<Value> {
    let cluster = Cluster::shared().await;
    let chart = cluster.root().join("helm/wss-sidecar");
    let values = cluster.root().join(VALUES);
    let (chart, values) = (chart.to_string_lossy(), values.to_string_lossy());
    let out = cluster
        .helm(&[
            "template",
            "wss-sidecar",
            &chart,
            "--namespace",
            "wss-sidecar",
            "--values",
            &values,
        ])
        .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helm template --values {VALUES}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("helm renders YAML"))
        .filter(|object: &Value| !object.is_null())
        .collect()
}

/// Every PromQL text in the render: (where it is, the query). Rule `expr`s of PrometheusRules,
/// and `targets[].expr` of the panels (rows' nested panels too) of dashboard ConfigMaps.
fn queries(objects: &[Value]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for object in objects {
        let name = object["metadata"]["name"].as_str().unwrap_or("?");
        if object["kind"] == "PrometheusRule" {
            for group in object["spec"]["groups"].as_array().into_iter().flatten() {
                for rule in group["rules"].as_array().into_iter().flatten() {
                    let what = rule["alert"].as_str().or(rule["record"].as_str());
                    let expr = rule["expr"].as_str().expect("every rule has an expr");
                    found.push((format!("{name}: {}", what.unwrap_or("?")), expr.into()));
                }
            }
        }
        if object["kind"] == "ConfigMap" && object["metadata"]["labels"]["grafana_dashboard"] == "1"
        {
            for (key, text) in object["data"].as_object().into_iter().flatten() {
                let text = text.as_str().expect("ConfigMap data is text");
                let dashboard: Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("{name}/{key} is not JSON: {e}"));
                panel_queries(&dashboard["panels"], &format!("{name}/{key}"), &mut found);
            }
        }
    }
    found
}

fn panel_queries(panels: &Value, at: &str, found: &mut Vec<(String, String)>) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            let mut expr = expr.to_string();
            for variable in GRAFANA_INTERVALS {
                expr = expr.replace(variable, "5m");
            }
            found.push((format!("{at}: panel {title:?}"), expr));
        }
        panel_queries(&panel["panels"], at, found);
    }
}

/// Collects the metric name of every selector (`name{…}` and `{__name__="name"}`).
#[derive(Default)]
struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        let by_matcher = selector
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__")
            .map(|m| m.value.clone());
        match selector.name.clone().or(by_matcher) {
            Some(name) => self.0.insert(name),
            None => return Err(format!("a selector without a metric name: {selector}")),
        };
        Ok(true)
    }
}

/// Parses `query` as PromQL and returns the metric names it selects.
fn metric_names(query: &str) -> Result<BTreeSet<String>, String> {
    let expr = parser::parse(query)?;
    let mut names = Names::default();
    walk_expr(&mut names, &expr)?;
    Ok(names.0)
}

/// The sample names a scrape exports, as Prometheus stores them: a histogram's as
/// `_bucket`, `_sum` and `_count`, a counter's with `_total`. (Every fixed label value is
/// created at zero, so a family shows before its first event.)
fn exported(body: &str) -> BTreeSet<String> {
    let scrape = Metrics::parse(body);
    scrape
        .scrape
        .samples
        .iter()
        .map(|sample| match sample.value {
            prometheus_parse::Value::Histogram(_) => format!("{}_bucket", sample.metric),
            _ => sample.metric.clone(),
        })
        .collect()
}

/// A real scrape of a sidecar that has forwarded a WebSocket, and of an injector that has
/// answered a review.
async fn scrape_sidecar_and_injector() -> BTreeSet<String> {
    let app = EchoServer::start_tcp().await;
    let served = Served::start(&app.addr().to_string(), &[]).await;
    let mut ws = served.ws().await.expect("websocket");
    assert_echo(&mut ws, Message::text("monitoring")).await;
    ws.close(None).await.expect("send close");
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    let proxy = &served.proxy;
    proxy
        .wait_for_metric(
            "wss_sidecar_connections_closed_total",
            &[("reason", "closed")],
            1.0,
        )
        .await;
    let (status, sidecar) = proxy.admin_get("/metrics").await;
    assert_eq!(status, 200, "{sidecar}");

    let injector = TestInjector::start(&[]).await;
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "echo", "namespace": "apps",
                     "labels": {"wss-sidecar.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/echo:1.0"}]}
    });
    let review = serde_json::to_vec(&admission_review("u-1", "apps", &pod)).expect("JSON");
    let (status, _) = injector.request("POST", "/mutate", &review).await;
    assert_eq!(status, 200);
    let (status, body) = http_get(injector.admin, "/metrics")
        .await
        .expect("the injector's /metrics");
    assert_eq!(status, 200, "{body}");
    injector.stop().await;

    let mut names = exported(&sidecar);
    names.extend(exported(&body));
    for (shown, what) in [
        (
            "wss_sidecar_handshake_duration_seconds_bucket",
            "a histogram's buckets",
        ),
        (
            "wss_sidecar_handshakes_total",
            "a labelled counter, after a handshake",
        ),
        (
            "wss_sidecar_injector_admissions_total",
            "the injector's counter",
        ),
    ] {
        assert!(names.contains(shown), "the scrape lacks {what} ({shown})");
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_and_dashboard_parse_as_promql_and_name_only_exported_metrics() {
    // The checker itself: it refuses what is not PromQL, and sees every selector.
    assert!(
        metric_names("rate(x[5m]").is_err(),
        "an unbalanced query parses"
    );
    assert_eq!(
        metric_names("sum(rate(a_total[5m])) / on() b + histogram_quantile(0.9, c_bucket)")
            .expect("PromQL"),
        BTreeSet::from(["a_total".into(), "b".into(), "c_bucket".into()])
    );

    let objects = render().await;
    let queries = queries(&objects);
    let rules = queries
        .iter()
        .filter(|(at, _)| !at.contains("panel"))
        .count();
    assert!(rules >= 4, "the README's four alerts: {queries:?}");
    assert!(
        queries.len() - rules >= 10,
        "the dashboard's panels: {queries:?}"
    );

    let exported = scrape_sidecar_and_injector().await;
    assert!(
        !exported.contains("wss_sidecar_no_such_metric_total"),
        "the scrape names every metric"
    );
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for (at, query) in &queries {
        match metric_names(query) {
            Err(err) => problems.push(format!("{at}: not PromQL: {err}\n  {query}")),
            Ok(names) if names.is_empty() => {
                problems.push(format!("{at}: names no metric: {query}"))
            }
            Ok(names) => {
                for name in names {
                    if !exported.contains(&name) {
                        problems.push(format!("{at}: {name} is not exported\n  {query}"));
                    }
                    used.insert(name);
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nexported: {exported:?}",
        problems.join("\n")
    );
    // The new metrics are on the dashboard.
    for name in [
        "wss_sidecar_handshakes_total",
        "wss_sidecar_handshake_duration_seconds_bucket",
        "wss_sidecar_upstream_connect_duration_seconds_bucket",
        "wss_sidecar_connection_duration_seconds_bucket",
        "wss_sidecar_injector_admissions_total",
        "wss_sidecar_injector_review_duration_seconds_bucket",
    ] {
        assert!(used.contains(name), "no rule or panel uses {name}");
    }
}
