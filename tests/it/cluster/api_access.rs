//! Sidecars that use the Kubernetes API, under the Role the chart's `sidecarAccess` renders and
//! with their pods' projected tokens, on the real authorizer: one serves a Secret through
//! `--cert-secret`, one gets its certificate from Pebble with `--acme-store secret:`. Each
//! serves its certificate, and the apiserver's audit log shows no 403 for their account.
//!
//! Issue 15, acceptance 3: the rendered Role holds no `create` of Secrets or Leases (the chart
//! renders the store's Secrets and Lease instead, and the sidecars work with those); the ACME
//! account lands in its own Secret; and a pod holding the same ServiceAccount's token (the
//! app's view) can read no Secret but those the Role names, nor create one (a service-account
//! token Secret would hand it another account's token): `kubectl auth can-i` and real requests
//! from a curl pod agree.
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
    let store_objects = assert_least_privilege(&rbac);
    cluster
        .apply(
            ns,
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: chat }\n",
        )
        .await;
    cluster.apply(ns, &rbac).await;
    // The store's objects exist before any sidecar runs, as rendered.
    for (kind, name) in &store_objects {
        cluster.kubectl_ok(&["-n", ns, "get", kind, name]).await;
    }

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
    // The pair in the store Secret; the account in its own, never beside the pair.
    let store = cluster
        .wait_json(
            Some(ns),
            &["secret", "chat-acme"],
            Duration::from_secs(30),
            |s| !str_at(s, "/data/tls.crt").is_empty(),
        )
        .await;
    assert_eq!(str_at(&store, "/type"), "kubernetes.io/tls");
    assert!(
        store["data"].get("acme-account.json").is_none(),
        "the account is in the store Secret: {:?}",
        store["data"]
    );
    let account = cluster
        .kubectl_ok(&["-n", ns, "get", "secret", "chat-acme-account", "-o", "json"])
        .await;
    let account: Value = serde_json::from_str(&account).expect("JSON");
    assert!(
        !str_at(&account, "/data/acme-account.json").is_empty(),
        "no account in chat-acme-account: {account}"
    );
    // The sidecar's writes keep what the chart set: a Lease renewal is a replace (PUT) of the
    // whole object, and must carry helm's annotations, or helm would delete it on uninstall.
    let lease = cluster
        .kubectl_ok(&["-n", ns, "get", "lease", "chat-acme", "-o", "json"])
        .await;
    let lease: Value = serde_json::from_str(&lease).expect("JSON");
    for object in [&store, &account, &lease] {
        assert_eq!(
            str_at(object, "/metadata/annotations/helm.sh~1resource-policy"),
            "keep",
            "{object}"
        );
    }
    assert!(
        !str_at(&lease, "/spec/renewTime").is_empty(),
        "the Lease was never taken: {lease}"
    );

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
    assert!(
        !requests.iter().any(|r| r["verb"] == "create"
            && matches!(
                r["objectRef"]["resource"].as_str(),
                Some("secrets" | "leases")
            )),
        "the sidecars tried to create a Secret or Lease"
    );

    // Last, as its 403s are this account's too: what the token lets the app do.
    the_token_reads_only_the_named_secrets(&cluster, ns).await;
}

/// The rendered sidecarAccess: every rule on Secrets or Leases names its objects and none
/// grants `create` (RBAC cannot limit create to a name); the store's Secret (a TLS Secret with
/// empty keys), account Secret and Lease are rendered, kept by helm on uninstall. Returns the
/// store objects as (kind, name).
fn assert_least_privilege(rbac: &str) -> Vec<(&'static str, &'static str)> {
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(rbac)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .filter(|d: &Value| !d.is_null())
        .collect();
    let roles: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Role").collect();
    assert_eq!(roles.len(), 1, "{rbac}");
    let rules = roles[0]["rules"].as_array().expect("rules");
    for rule in rules {
        let resources = rule["resources"].as_array().expect("resources");
        let scoped = resources.iter().any(|r| r == "secrets" || r == "leases");
        if !scoped {
            continue;
        }
        let verbs = rule["verbs"].as_array().expect("verbs");
        assert!(
            !verbs.iter().any(|v| v == "create" || v == "*"),
            "create on {resources:?}: {rule}"
        );
        assert!(
            rule["resourceNames"]
                .as_array()
                .is_some_and(|n| !n.is_empty()),
            "a rule on {resources:?} without resourceNames: {rule}"
        );
    }
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} rendered:\n{rbac}"))
    };
    let store = find("Secret", "chat-acme");
    assert_eq!(store["type"], "kubernetes.io/tls");
    assert_eq!(
        store["data"],
        serde_json::json!({"tls.crt": "", "tls.key": ""})
    );
    let objects = [
        ("secret", "chat-acme"),
        ("secret", "chat-acme-account"),
        ("lease", "chat-acme"),
    ];
    for (kind, name) in objects {
        let kind_name = if kind == "secret" { "Secret" } else { "Lease" };
        let object = find(kind_name, name);
        assert_eq!(
            object["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{object}"
        );
    }
    objects.to_vec()
}

/// `kubectl auth can-i` as the ServiceAccount, and the same token used from a curl pod: get,
/// list and create of Secrets are refused but for the names the Role grants.
async fn the_token_reads_only_the_named_secrets(cluster: &Cluster, ns: &str) {
    cluster
        .apply(
            ns,
            "apiVersion: v1\nkind: Secret\nmetadata: { name: db-password }\n\
             stringData: { password: hunter2 }\n",
        )
        .await;
    let user = format!("system:serviceaccount:{ns}:chat");
    for (verb, resource, allowed) in [
        ("get", "secrets", "no"),
        ("list", "secrets", "no"),
        ("watch", "secrets", "no"),
        ("create", "secrets", "no"),
        ("create", "leases", "no"),
        ("get", "secrets/db-password", "no"),
        ("get", "secrets/chat-acme", "yes"),
        ("get", "secrets/chat-acme-account", "yes"),
        ("get", "secrets/web-tls", "yes"),
        ("update", "leases/chat-acme", "yes"),
    ] {
        let out = cluster
            .kubectl(&["auth", "can-i", verb, resource, "-n", ns, "--as", &user])
            .await;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(answer, allowed, "can-i {verb} {resource} as {user}");
    }

    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let curl = format!(
        "curl -s -o /dev/null -w '%{{http_code}}' --cacert {sa}/ca.crt \
         -H \"Authorization: Bearer $(cat {sa}/token)\""
    );
    let api =
        format!("https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/{ns}");
    let token_secret = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"stolen","annotations":{"kubernetes.io/service-account.name":"chat"}},"type":"kubernetes.io/service-account-token"}"#;
    let script = yaml_string(&format!(
        "for path in secrets/db-password secrets secrets/chat-acme; do \
           echo \"GET $path $({curl} {api}/$path)\"; done; \
         echo \"POST secrets $({curl} -X POST -H 'Content-Type: application/json' \
           -d '{token_secret}' {api}/secrets)\"; echo done"
    ));
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{ name: app-view }}\nspec:\n  \
         serviceAccountName: chat\n  restartPolicy: Never\n  containers:\n    \
         - name: curl\n      image: {CURL_IMAGE}\n      command: [\"sh\", \"-c\", {script}]\n"
    );
    cluster.apply(ns, &pod).await;
    let pod = cluster
        .wait_json(Some(ns), &["pod", "app-view"], POD_START, |p| {
            matches!(str_at(p, "/status/phase"), "Succeeded" | "Failed")
        })
        .await;
    let log = cluster.container_log(ns, "app-view", str_at(&pod, "/metadata/uid"), "curl");
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(text.contains("done"), "the script did not finish:\n{text}");
    for (line, why) in [
        ("GET secrets/db-password 403", "another Secret is readable"),
        ("GET secrets 403", "Secrets can be listed"),
        (
            "GET secrets/chat-acme 200",
            "the store Secret is not readable",
        ),
        ("POST secrets 403", "a token Secret can be created"),
    ] {
        assert!(text.contains(line), "{why}:\n{text}");
    }
    let stolen = cluster
        .kubectl(&["-n", ns, "get", "secret", "stolen"])
        .await;
    assert!(!stolen.status.success(), "the token Secret exists");
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
