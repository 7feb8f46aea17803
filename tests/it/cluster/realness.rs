//! The cluster is Kubernetes, not a stub: the apiserver validates with its own rules, the
//! Service proxy routes only to Ready endpoints, a container sees only its image and its
//! mounts, and deleting a pod runs the preStop hooks before SIGTERM in the kubelet's order.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::cluster::{
    CURL_IMAGE, Cluster, NODE_IP, POD_START, SIDECAR_IMAGE, pod_ip, str_at, yaml_string,
};
use crate::support::recorder::Recorder;
use crate::support::{assert_echo, ws_upgrade};

#[tokio::test(flavor = "multi_thread")]
async fn the_apiserver_refuses_a_port_name_longer_than_15_characters() {
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("refused").await;
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{ name: long-port }}\nspec:\n  containers:\n    \
         - name: app\n      image: {SIDECAR_IMAGE}\n      ports:\n        \
         - {{ name: sixteen-chars-ab, containerPort: 8080 }}\n"
    );
    let output = cluster
        .kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], &pod)
        .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a 16-character port name was accepted"
    );
    assert!(
        stderr.contains("must be no more than 15 characters"),
        "not the apiserver's own message: {stderr}"
    );
}

/// An echo pod (plain ws on 8080) behind a LoadBalancer Service of the same name; `ready`
/// picks a readiness probe that passes or one that never does.
fn echo_behind_service(name: &str, ready: bool) -> String {
    let probe = if ready {
        "tcpSocket: { port: 8080 }"
    } else {
        "httpGet: { path: /never, port: 9999 }"
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{ app: {name} }}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: {SIDECAR_IMAGE}
      args: ["echo", "--listen", "0.0.0.0:8080"]
      readinessProbe:
        {probe}
        periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: LoadBalancer
  selector: {{ app: {name} }}
  ports:
    - {{ port: 80, targetPort: 8080 }}
"#
    )
}

async fn ws_echo(addr: SocketAddr) -> Result<(), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut ws = ws_upgrade(tcp, format!("ws://{addr}/ws"))
        .await
        .map_err(|e| format!("upgrade via {addr}: {e}"))?;
    assert_echo(&mut ws, Message::text("hello")).await;
    Ok(())
}

async fn service_addrs(cluster: &Cluster, ns: &str, name: &str) -> [SocketAddr; 2] {
    let service = cluster
        .get_json(Some(ns), &["service", name])
        .await
        .expect("service exists");
    let cluster_ip = str_at(&service, "/spec/clusterIP")
        .parse()
        .expect("a ClusterIP");
    let lb = cluster.load_balancer_ip(ns, name).await;
    [SocketAddr::new(cluster_ip, 80), SocketAddr::new(lb, 80)]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_that_is_not_ready_gets_no_service_traffic() {
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("unready").await;
    cluster
        .apply(&ns.name, &echo_behind_service("control", true))
        .await;
    cluster
        .apply(&ns.name, &echo_behind_service("unready", false))
        .await;
    cluster.wait_ready_pods(&ns.name, "app=control", 1).await;
    for addr in service_addrs(&cluster, &ns.name, "control").await {
        crate::support::wait_until(
            &format!("the ready control pod echoes through {addr}"),
            Duration::from_secs(30),
            || async move { ws_echo(addr).await.is_ok() },
        )
        .await;
    }
    // The unready pod runs and answers on its own IP ...
    let pod = cluster
        .wait_json(Some(&ns.name), &["pod", "unready"], POD_START, |p| {
            p["status"]["containerStatuses"][0]["state"]["running"].is_object()
        })
        .await;
    let direct = SocketAddr::new(pod_ip(&pod), 8080);
    crate::support::wait_until(
        "the unready pod answers on its pod IP",
        Duration::from_secs(30),
        || async move { ws_echo(direct).await.is_ok() },
    )
    .await;
    assert_eq!(
        cluster
            .get_json(Some(&ns.name), &["pod", "unready"])
            .await
            .map(|p| { crate::support::cluster::pod_ready(&p) }),
        Some(false)
    );
    // ... but its Service refuses the connection, over and over.
    let addrs = service_addrs(&cluster, &ns.name, "unready").await;
    for _ in 0..10 {
        for addr in addrs {
            let refused = TcpStream::connect(addr).await;
            assert!(
                matches!(&refused, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
                "{addr} of a Service without ready endpoints: {refused:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_sees_its_image_and_mounts_and_nothing_of_the_host() {
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("isolated").await;
    let kubeconfig = cluster.kubeconfig().display().to_string();
    let script = yaml_string(&format!(
        "ls /; echo ---; cat /config/greeting; echo; echo ---; \
         cat {kubeconfig} && echo READ-KUBECONFIG; ls /work && echo SAW-WORK; echo done"
    ));
    let pod = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{ name: seen }}
data: {{ greeting: "hello from a ConfigMap" }}
---
apiVersion: v1
kind: Pod
metadata: {{ name: look }}
spec:
  restartPolicy: Never
  containers:
    - name: look
      image: {CURL_IMAGE}
      command: ["sh", "-c", {script}]
      volumeMounts:
        - {{ name: seen, mountPath: /config }}
  volumes:
    - name: seen
      configMap: {{ name: seen }}
"#
    );
    cluster.apply(&ns.name, &pod).await;
    let pod = cluster
        .wait_json(Some(&ns.name), &["pod", "look"], POD_START, |p| {
            matches!(str_at(p, "/status/phase"), "Succeeded" | "Failed")
        })
        .await;
    let uid = str_at(&pod, "/metadata/uid");
    let log = cluster.container_log(&ns.name, "look", uid, "look");
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(
        text.contains("hello from a ConfigMap"),
        "the mount is missing:\n{text}"
    );
    assert!(
        text.contains("done"),
        "the script did not run to its end:\n{text}"
    );
    assert!(
        !text.contains("READ-KUBECONFIG"),
        "the host's kubeconfig was readable:\n{text}"
    );
    assert!(
        !text.contains("SAW-WORK"),
        "the host's /work was visible:\n{text}"
    );
    let root: Vec<&str> = text
        .split("---")
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    for host_only in ["work", "boot", "opt", "srv", "mnt", "media"] {
        assert!(
            !root.contains(&host_only),
            "/{host_only} of the host is in the root: {root:?}"
        );
    }
}

/// A container of the curl image that reports its start and its SIGTERM to the recorder.
fn reporting(name: &str, recorder: &str, pre_stop: &str, sidecar: bool) -> String {
    let script = yaml_string(&format!(
        "trap 'curl -fs {recorder}/event/{name}-term; exit 0' TERM; \
         curl -fs {recorder}/event/{name}-started; while true; do sleep 0.2; done"
    ));
    let restart = if sidecar {
        "\n      restartPolicy: Always"
    } else {
        ""
    };
    format!(
        r#"    - name: {name}
      image: {CURL_IMAGE}{restart}
      command: ["sh", "-c", {script}]
      lifecycle:
        preStop:
          exec: {{ command: ["curl", "-fs", "{recorder}/{pre_stop}"] }}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_pod_runs_the_prestop_hooks_then_sigterm_in_the_kubelets_order() {
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("order").await;
    let recorder = Recorder::start(NODE_IP).await;
    let url = &recorder.url;
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{ name: order, labels: {{ app: order }} }}\nspec:\n  \
         terminationGracePeriodSeconds: 30\n  initContainers:\n{}  containers:\n{}",
        reporting("sidecar", url, "event/sidecar-prestop", true),
        reporting("app", url, "delay/2000/app-prestop", false),
    );
    cluster.apply(&ns.name, &pod).await;
    cluster.wait_ready_pods(&ns.name, "app=order", 1).await;
    crate::support::wait_until(
        "both containers reported their start",
        POD_START,
        || async {
            recorder.at("sidecar-started").is_some() && recorder.at("app-started").is_some()
        },
    )
    .await;
    cluster
        .kubectl_ok(&["delete", "pod", "order", "-n", &ns.name, "--wait=false"])
        .await;
    crate::support::wait_until(
        "the sidecar got SIGTERM",
        Duration::from_secs(40),
        || async { recorder.at("sidecar-term").is_some() },
    )
    .await;
    let at = |name: &str| {
        recorder
            .at(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", recorder.events()))
    };
    let (sidecar_pre, app_pre) = (at("sidecar-prestop"), at("app-prestop"));
    let (app_term, sidecar_term) = (at("app-term"), at("sidecar-term"));
    let events = recorder.events();
    // Every preStop starts at once, the sidecar's included.
    assert!(
        sidecar_pre.abs_diff(app_pre) < Duration::from_millis(1500),
        "the preStop hooks did not start together: {events:?}"
    );
    // The app gets SIGTERM when its preStop (2 s) has ended, not before.
    assert!(
        app_term >= app_pre + Duration::from_millis(1900),
        "the app got SIGTERM before its preStop ended: {events:?}"
    );
    // The native sidecar gets SIGTERM only after the app has exited, long before the grace
    // period ends (no SIGKILL path).
    assert!(
        sidecar_term > app_term,
        "the sidecar got SIGTERM before the app exited: {events:?}"
    );
    assert!(
        sidecar_term < app_pre + Duration::from_secs(20),
        "the sidecar's SIGTERM waited for the grace period: {events:?}"
    );
}
