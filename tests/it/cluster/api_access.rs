//! Sidecars that use the Kubernetes API, under the Role the chart's `sidecarAccess` renders and
//! with their pods' projected tokens, on the real authorizer: one serves a Secret through
//! `--cert-secret`, one gets its certificate from Pebble with `--acme-store secret:`. Each
//! serves its certificate, and the apiserver's audit log shows no 403 for their account.
//!
//! Issue 14, acceptance 5: `kubectl describe pod` of the ACME pod shows the sidecar's
//! CertificateObtained Event. kubectl describe's `Events` section lists the Events whose
//! `regarding.uid` is the pod's, so the sidecar must know `POD_UID` (downward API
//! `metadata.uid`), as the injector gives it.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::support::cluster::{
    CURL_IMAGE, Cluster, NODE_IP, POD_START, pod_ip, str_at, yaml_string,
};
use crate::support::pebble::Pebble;
use crate::support::recorder::Recorder;
use crate::support::{
    LeafSpec, TestCa, any_certificate_config, client_config, install_crypto_provider, leaf_names,
    peer_leaf, tls_connect,
};

use super::{SidecarPod, pebble_for_pods, sidecar_pod};

/// The name the ACME sidecar orders, resolved by Pebble's DNS to the pod's IP.
const ACME_NAME: &str = "chat.acme.test";

#[tokio::test(flavor = "multi_thread")]
async fn cert_secret_and_acme_secret_store_work_under_the_charts_role_without_a_403() {
    install_crypto_provider();
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("team").await;
    let ns = ns.name.as_str();
    let access = serde_json::json!([{
        "namespace": ns, "serviceAccount": "chat",
        "certSecrets": ["web-tls"], "acmeStores": ["chat-acme"],
    }]);
    let chart = cluster.root().join("helm/wss-sidecar");
    let rbac = cluster
        .helm_ok(&[
            "template",
            "wss-sidecar",
            chart.to_str().expect("utf-8 path"),
            "--show-only",
            "templates/sidecar-rbac.yaml",
            "--set-json",
            &format!("sidecarAccess={access}"),
        ])
        .await;
    cluster
        .apply(
            ns,
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: chat }\n",
        )
        .await;
    cluster.apply(ns, &rbac).await;

    // --cert-secret: the Secret read and watched through the API.
    let ca = TestCa::new("web test CA");
    let pair = ca.issue(LeafSpec::new(&["web.test"]));
    cluster.put_tls_secret(ns, "web-tls", &pair).await;
    cluster
        .apply(
            ns,
            &sidecar_pod("web", "app: web", "chat", &["--cert-secret=web-tls"]),
        )
        .await;
    let web = cluster.wait_ready_pods(ns, "app=web", 1).await;
    let addr = SocketAddr::new(pod_ip(&web[0]), 8443);
    let served = tls_connect(addr, "web.test", client_config(&[ca.cert_der()], &[]))
        .await
        .expect("handshake with the --cert-secret sidecar");
    assert_eq!(peer_leaf(&served), pair.cert_chain_der()[0]);

    // --acme-store secret: against Pebble on the Node's bridge address; an init container holds
    // the sidecar back until Pebble's DNS answers the name with the pod's IP.
    let pebble = pebble_for_pods(&cluster, ns, 8443, 8080).await;
    let recorder = Recorder::start(NODE_IP).await;
    cluster.apply(ns, &acme_pod(&pebble, &recorder.url)).await;
    let pod = cluster
        .wait_json(Some(ns), &["pod", "chat"], POD_START, |p| {
            !str_at(p, "/status/podIP").is_empty()
        })
        .await;
    let ip = pod_ip(&pod);
    pebble.set_a(ACME_NAME, &ip.to_string()).await;
    recorder.release("chat");
    // Ready comes first (the pod answers the challenge), the certificate a moment later.
    cluster.wait_ready_pods(ns, "app=chat", 1).await;
    let deadline = tokio::time::Instant::now() + POD_START;
    let served = loop {
        let conn = tls_connect(
            SocketAddr::new(ip, 8443),
            ACME_NAME,
            any_certificate_config(),
        )
        .await;
        match conn {
            Ok(served) => break served,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("no certificate from the ACME sidecar in {POD_START:?}: {err}"),
        }
    };
    assert_eq!(leaf_names(&peer_leaf(&served)), vec![ACME_NAME.to_string()]);
    let roots = pebble.issuer_roots().await;
    tls_connect(
        SocketAddr::new(ip, 8443),
        ACME_NAME,
        client_config(&roots, &[]),
    )
    .await
    .expect("the served certificate chains to Pebble's root");
    cluster
        .wait_json(
            Some(ns),
            &["secret", "chat-acme"],
            Duration::from_secs(30),
            |_| true,
        )
        .await;

    described_with_the_certificate_obtained_event(&cluster, ns, "chat").await;

    let user = format!("system:serviceaccount:{ns}:chat");
    let requests = audit_requests(&cluster, &user);
    let forbidden: Vec<&Value> = requests
        .iter()
        .filter(|r| r["responseStatus"]["code"] == 403)
        .collect();
    assert!(forbidden.is_empty(), "403s for {user}: {forbidden:#?}");
    let did = |verb: &str, resource: &str| {
        requests
            .iter()
            .any(|r| r["verb"] == verb && r["objectRef"]["resource"] == resource)
    };
    // A watch is audited at ResponseComplete only when it ends, so the open watches of the
    // two sidecars are not in the log yet; the list before each watch is.
    assert!(did("list", "secrets"), "no list of Secrets by {user}");
    assert!(
        did("patch", "secrets"),
        "no patch of the store Secret by {user}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r["objectRef"]["resource"] == "leases"),
        "no Lease request by {user}"
    );
}

/// Awaits `kubectl describe pod` listing CertificateObtained among the pod's Events.
async fn described_with_the_certificate_obtained_event(cluster: &Cluster, ns: &str, pod: &str) {
    let deadline = tokio::time::Instant::now() + POD_START;
    loop {
        let described = cluster
            .kubectl_ok(&["-n", ns, "describe", "pod", pod])
            .await;
        let events = described.split("Events:").nth(1).unwrap_or("");
        if events.contains("CertificateObtained") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no CertificateObtained in `kubectl describe pod` within {POD_START:?}:\n{described}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The audit events of requests made by `user`.
fn audit_requests(cluster: &Cluster, user: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(cluster.audit_log()).expect("the apiserver's audit log");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["user"]["username"] == user)
        .collect()
}

fn acme_pod(pebble: &Pebble, recorder: &str) -> String {
    let hold = yaml_string(&format!(
        "until curl -fs {recorder}/hold/chat >/dev/null; do sleep 0.5; done"
    ));
    let init_before = format!(
        "    - name: wait-for-dns\n      image: {CURL_IMAGE}\n      command: [\"sh\", \"-c\", {hold}]\n"
    );
    let pod = SidecarPod {
        init_before: &init_before,
        mounts: "        - { name: pebble-root, mountPath: /pebble, readOnly: true }\n",
        volumes: "    - name: pebble-root\n      configMap: { name: pebble-root }\n",
    };
    pod.yaml_with_identity(
        "chat",
        "app: chat",
        "chat",
        &[
            &format!("--acme-domain={ACME_NAME}"),
            &format!("--acme-directory={}", pebble.directory),
            // The self-check resolves through Pebble's DNS and dials the port Pebble validates.
            &format!("--acme-resolver={}", pebble.dns()),
            "--acme-self-check-tls-port=8443",
            "--acme-ca-root=/pebble/root.pem",
            "--acme-store=secret:chat-acme",
            "--acme-email=ops@acme.test",
        ],
    )
}
