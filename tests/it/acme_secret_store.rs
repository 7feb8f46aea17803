//! `--acme-store secret:…`: three sidecar processes sharing one ACME Secret and its Lease
//! through the in-process API server, ordering from the real Pebble. One Lease holder and one
//! order, every replica serves the certificate and answers validation (acceptance 2); a leader
//! killed mid-order is replaced once its Lease expires, and the order is resumed (acceptance 3);
//! the wake-up after a `410 Gone` re-list (acceptance 5); a failure reported as an Event, its
//! back-off kept in the Secret across a restart. The API server enforces the example
//! Role (`manifests/examples/sidecar-rbac.yaml`) throughout: the sidecar needs nothing more.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use hyper::Method;
use serde_json::Value;
use tempfile::TempDir;

use crate::acme::{ISSUE_TIMEOUT, ORDERS, echo_as};
use crate::acme_replicas::{
    IPS, NAMES, assert_each_answered_its_name, pebble_for_replicas, scrape,
};
use crate::support::fake_api::{FakeApi, example_role};
use crate::support::pebble::{Pebble, free_addr};
use crate::support::*;

const NS: &str = "team";
/// The store's name: the example Role grants exactly this one.
const STORE: &str = "chat-acme";
const SECRET: &str = "/api/v1/namespaces/team/secrets/chat-acme";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/team/leases/chat-acme";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/team/leases";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team/events";
/// What Pebble logs for each order placed.
const NEW_ORDER: &str = "POST /order-plz";

/// Pebble, the API server with the example Role in force, and the echo app.
pub struct Cluster {
    pub api: FakeApi,
    pub pebble: Pebble,
    app: EchoServer,
    port: u16,
    kubeconfig: PathBuf,
    _dir: TempDir,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let (pebble, port) = pebble_for_replicas().await;
        let api = FakeApi::start().await;
        let (namespace, rules) = example_role();
        assert_eq!(namespace, NS);
        api.enforce_role(&namespace, rules);
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path(), NS);
        Cluster {
            api,
            pebble,
            app: EchoServer::start_tcp().await,
            port,
            kubeconfig,
            _dir: dir,
        }
    }

    /// Replica `i` (0-based) on 127.0.0.(i+1), as pod `chat-i`, ordering every name, with
    /// `extra` flags.
    pub async fn replica(&self, i: usize, extra: &[&str]) -> Sidecar {
        let mut args = vec![
            "--upstream".to_string(),
            self.app.addr().to_string(),
            "--acme-directory".into(),
            self.pebble.directory.clone(),
            "--acme-ca-root".into(),
            self.pebble.ca_root.display().to_string(),
            "--acme-store".into(),
            format!("secret:{STORE}"),
            "--acme-email".into(),
            "ops@acme.test".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        for name in NAMES {
            args.extend(["--acme-domain".to_string(), name.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pod = format!("chat-{i}");
        let env = [
            ("KUBECONFIG", self.kubeconfig.to_str().unwrap()),
            ("POD_NAME", pod.as_str()),
            ("POD_NAMESPACE", NS),
            ("HOSTNAME", pod.as_str()),
        ];
        Sidecar::spawn_with_env(&format!("{}:{}", IPS[i], self.port), &args, &env).await
    }

    /// Starts three replicas that cannot take the Lease (403) until all three listen, so no
    /// validation reaches a replica that is not up yet; then lets them race for it.
    async fn replicas(&self, poll_interval: &str, lease_duration: &str) -> Vec<Sidecar> {
        let extra = [
            "--acme-poll-interval",
            poll_interval,
            "--acme-lease-duration",
            lease_duration,
        ];
        self.api.fail(Method::GET, LEASES, 403, None);
        let mut replicas = Vec::new();
        for i in 0..IPS.len() {
            replicas.push(self.replica(i, &extra).await);
        }
        self.api.clear_faults();
        replicas
    }

    /// The distinct holders the Lease has had.
    fn lease_holders(&self) -> BTreeSet<String> {
        self.api
            .history(LEASE)
            .iter()
            .filter_map(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
            .filter(|h| !h.is_empty())
            .collect()
    }

    fn orders_placed(&self) -> usize {
        self.pebble.requests_logged(NEW_ORDER)
    }

    /// Every name, through the replica the DNS sends it to, shows the same issued leaf.
    async fn assert_all_serve(&self, replicas: &[(usize, &Sidecar)]) {
        let mut leaves = Vec::new();
        for (i, replica) in replicas {
            leaves.push(echo_as(&self.pebble, replica.addr, NAMES[*i]).await);
        }
        assert!(
            leaves.iter().all(|l| *l == leaves[0]),
            "all replicas serve the one issued certificate"
        );
    }
}

pub async fn wait_ready(replica: &Sidecar) {
    let admin = replica.admin;
    wait_until("the replica is ready", ISSUE_TIMEOUT, || async move {
        http_get(admin, "/readyz")
            .await
            .is_ok_and(|(s, _)| s == 200)
    })
    .await;
}

/// The pending challenges a write to the store Secret carries (a merge patch or a create).
fn challenges_written(body: &Value) -> usize {
    let Some(encoded) = body["data"]["acme-challenges.json"].as_str() else {
        return 0;
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_default();
    serde_json::from_slice::<Vec<Value>>(&decoded).map_or(0, |v| v.len())
}

fn holder_of(replica: &Sidecar) -> String {
    format!("-{}-", replica.child.id().expect("running"))
}

#[tokio::test]
async fn three_replicas_one_lease_holder_one_order_and_every_replica_answers() {
    let cluster = Cluster::start().await;
    // Polling once an hour: everything the replicas learn from each other comes by the watch.
    let replicas = cluster.replicas("1h", "6s").await;

    // The replicas tried the Lease once and now wait for the store to change. Compacting the
    // history ends their watches; resuming gets 410 Gone, and the re-list is what wakes them.
    let store_list =
        |r: &String| r.starts_with("GET /api/v1/namespaces/team/secrets?") && r.contains(STORE);
    wait_until("every replica watches the store", WAIT, || async {
        cluster
            .api
            .requests()
            .iter()
            .filter(|r| store_list(r) && r.contains("watch=true"))
            .count()
            >= replicas.len()
    })
    .await;
    let lists = |api: &FakeApi| {
        api.requests()
            .iter()
            .filter(|r| store_list(r) && !r.contains("watch=true"))
            .count()
    };
    let lists_before = lists(&cluster.api);
    cluster.api.compact();
    for replica in &replicas {
        wait_ready(replica).await;
    }
    // The orderer may be ready before its own re-list (kube's watcher backs off first).
    wait_until("each replica lists again after 410 Gone", WAIT, || async {
        lists(&cluster.api) >= lists_before + replicas.len()
    })
    .await;

    assert_eq!(cluster.orders_placed(), 1, "one order at the CA");
    let mut successes = 0.0;
    for replica in &replicas {
        let metrics = scrape(replica.admin).await;
        successes += metrics.value(ORDERS, &[("result", "success")]);
        assert_eq!(metrics.value(ORDERS, &[("result", "failure")]), 0.0);
    }
    assert_eq!(successes, 1.0);
    let holders = cluster.lease_holders();
    assert_eq!(holders.len(), 1, "one Lease holder: {holders:?}");
    let holder = holders.first().unwrap();
    let leader = replicas
        .iter()
        .position(|r| holder.contains(&holder_of(r)))
        .expect("the holder is one of the replicas");

    let all: Vec<(usize, &Sidecar)> = replicas.iter().enumerate().collect();
    cluster.assert_all_serve(&all).await;
    // Each name was validated at its own replica: the two that did not order answered too.
    assert_each_answered_its_name(&replicas);

    // The store is an ordinary TLS Secret holding the served pair.
    let secret = cluster.api.get(SECRET).expect("the store Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(cluster.api.unconditional_writes_to(SECRET), 0);
    // The leader's pod got a CertificateObtained event.
    wait_until("a CertificateObtained event", WAIT, || async {
        cluster.api.list(EVENTS).iter().any(|e| {
            e["reason"] == "CertificateObtained"
                && e["regarding"]["name"] == format!("chat-{leader}").as_str()
        })
    })
    .await;
    // Everything was allowed by the example Role, and its store rules were all needed.
    assert_eq!(cluster.api.denied(), Vec::new());
    let unused = cluster.api.unused_rules();
    assert_eq!(
        unused,
        vec![0],
        "only the --cert-secret rule is unused here"
    );
}

#[tokio::test]
async fn a_leader_killed_mid_order_is_replaced_after_its_lease_and_the_order_is_resumed() {
    let cluster = Cluster::start().await;
    // The leader dies while it publishes the challenge answers: hold that write unanswered.
    cluster
        .api
        .stall(Method::PATCH, SECRET, |body| challenges_written(body) > 0);
    let lease = Duration::from_secs(4);
    let mut replicas = cluster.replicas("500ms", "4s").await;
    wait_until(
        "the leader publishes its answers",
        ISSUE_TIMEOUT,
        || async { cluster.api.stalled() == 1 },
    )
    .await;
    let holders = cluster.lease_holders();
    assert_eq!(holders.len(), 1, "{holders:?}");
    let dead_holder = holders.first().unwrap().clone();
    let dead = replicas
        .iter()
        .position(|r| dead_holder.contains(&holder_of(r)))
        .expect("the holder is a replica");
    replicas[dead].child.start_kill().unwrap();
    let _ = replicas[dead].child.wait().await;
    cluster.api.release_stalled();
    // As a Service would, the dead pod's name now reaches a live replica.
    let live: Vec<usize> = (0..IPS.len()).filter(|i| *i != dead).collect();
    cluster.pebble.set_a(NAMES[dead], IPS[live[0]]).await;

    for i in &live {
        wait_ready(&replicas[*i]).await;
    }
    let placed = cluster.orders_placed();
    assert!(placed <= 2, "at most one extra order: {placed}");
    assert_eq!(
        placed, 1,
        "the dead leader's order was resumed, not replaced"
    );

    // The new holder took the Lease only once the dead one's had expired.
    let history = cluster.api.history(LEASE);
    let renewed = |l: &Value| {
        let at = l["spec"]["renewTime"].as_str().expect("renewTime");
        humantime::parse_rfc3339(at).expect("RFC 3339")
    };
    let holder = |l: &Value| l["spec"]["holderIdentity"].as_str().map(str::to_string);
    let taken = history
        .iter()
        .position(|l| holder(l).is_some_and(|h| h != dead_holder))
        .expect("another replica took the Lease");
    let last_renewal = renewed(&history[taken - 1]);
    assert_eq!(holder(&history[taken - 1]).as_deref(), Some(&*dead_holder));
    let gap = renewed(&history[taken])
        .duration_since(last_renewal)
        .unwrap_or_default();
    assert!(gap >= lease, "taken over {gap:?} after the last renewal");
    let new_holder = holder(&history[taken]).unwrap();
    let successor = live
        .iter()
        .find(|i| new_holder.contains(&holder_of(&replicas[**i])))
        .expect("the new holder is a live replica");
    assert!(
        replicas[*successor]
            .logs()
            .iter()
            .any(|l| l.contains("resuming the order placed earlier")),
        "the successor resumed the order"
    );

    let serving: Vec<(usize, &Sidecar)> = live.iter().map(|i| (*i, &replicas[*i])).collect();
    cluster.assert_all_serve(&serving).await;
    let dead_name = (live[0], &replicas[live[0]]);
    let leaf = echo_as(&cluster.pebble, dead_name.1.addr, NAMES[dead]).await;
    assert!(leaf_names(&leaf).contains(&NAMES[dead].to_string()));
    assert_eq!(cluster.api.denied(), Vec::new());
}

/// Bound for waits whose duration is not itself under test.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_failed_order_is_an_event_and_its_back_off_outlives_a_restart() {
    let api = FakeApi::start().await;
    let (namespace, rules) = example_role();
    api.enforce_role(&namespace, rules);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path(), NS);
    // A CA that cannot be reached.
    let directory = format!("https://{}/dir", free_addr().await);
    let store = format!("secret:{STORE}");
    let args = [
        "--acme-domain",
        NAMES[0],
        "--acme-directory",
        &directory,
        "--acme-store",
        &store,
        "--acme-backoff-base",
        "1h",
    ];
    let env = [
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("POD_NAME", "chat-0"),
        ("POD_NAMESPACE", NS),
    ];
    let stored_failures = || {
        let secret = api.get(SECRET)?;
        let state = secret["data"]["acme-state.json"].as_str()?;
        let state = base64::engine::general_purpose::STANDARD
            .decode(state)
            .ok()?;
        let state: Value = serde_json::from_slice(&state).ok()?;
        Some((state["failures"].as_u64()?, state["next_attempt"].as_i64()?))
    };

    let first = Sidecar::spawn_with_env("127.0.0.1:0", &args, &env).await;
    wait_until("the failure is kept in the Secret", WAIT, || async {
        stored_failures().is_some()
    })
    .await;
    let (failures, next_attempt) = stored_failures().unwrap();
    assert_eq!(failures, 1);
    wait_until("an AcmeOrderFailed event on the pod", WAIT, || async {
        api.list(EVENTS)
            .iter()
            .any(|e| e["reason"] == "AcmeOrderFailed" && e["regarding"]["name"] == "chat-0")
    })
    .await;
    drop(first);

    // A crash loop must not become an order loop: the next pod reads the back-off and waits.
    let restarted = Sidecar::spawn_with_env("127.0.0.1:0", &args, &env).await;
    let next_renewal = "wss_sidecar_acme_next_renewal_timestamp_seconds";
    wait_until("the restart reads the stored back-off", WAIT, || async {
        let metrics = scrape(restarted.admin).await;
        metrics.value(next_renewal, &[]) == next_attempt as f64
    })
    .await;
    let metrics = scrape(restarted.admin).await;
    assert_eq!(metrics.value(ORDERS, &[]), 0.0, "no order before it ends");
    assert_eq!(
        metrics.value("wss_sidecar_acme_consecutive_failures", &[]),
        1.0
    );
    assert_eq!(http_get(restarted.admin, "/readyz").await.unwrap().0, 503);
    assert_eq!(api.denied(), Vec::new());
}
