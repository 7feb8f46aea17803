//! TCP keepalive: a client that vanishes without a FIN (its network namespace's link cut) is
//! reaped within the keepalive bound, and with keepalive off it is not.
//!
//! Needs root (CAP_NET_ADMIN), `ip` (iproute2) and `python3`: the client runs in a network
//! namespace of its own behind a veth pair, so the link can be cut under a live connection.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::support::child::{Process, spawn_collector};
use crate::support::proxy::Metrics;
use crate::support::*;

/// The keepalive flags of the reaping test: first probe after 2 s of silence, then every 1 s,
/// and the kernel gives up once nothing has been acknowledged for 6 s.
const KEEPALIVE: [&str; 8] = [
    "--tcp-keepalive",
    "2s",
    "--tcp-keepalive-interval",
    "1s",
    "--tcp-keepalive-count",
    "3",
    "--tcp-user-timeout",
    "6s",
];
/// `--tcp-keepalive` above: no probe, so no reaping, before this much silence.
const IDLE: Duration = Duration::from_secs(2);
/// `Keepalive::reap_bound` for the flags above: the user timeout plus one probe interval (the
/// kernel checks the user timeout at each probe).
const REAP_BOUND: Duration = Duration::from_secs(7);
/// Added to [`REAP_BOUND`] for the scrape interval and a loaded machine.
const REAP_SLACK: Duration = Duration::from_secs(3);
/// How long the reaping test waits before failing: the bound with ample room, so that a late
/// reap is reported with its time rather than as a timeout.
const REAP_WAIT: Duration = Duration::from_secs(20);
/// How long the control test watches a cut connection stay open without keepalive: longer
/// than [`REAP_BOUND`] plus [`REAP_SLACK`], when the reaping test's connection is long gone.
const HOLD_WAIT: Duration = Duration::from_secs(10);
/// How long the client may take to connect, upgrade and see its echo.
const CLIENT_WAIT: Duration = Duration::from_secs(20);

const OPEN: &str = "wss_sidecar_connections_open";
const CLOSED: &str = "wss_sidecar_connections_closed_total";
const BY_KEEPALIVE: [(&str, &str); 1] = [("reason", "keepalive")];

#[tokio::test]
async fn a_client_that_vanishes_is_reaped_within_the_keepalive_bound() {
    let mut s = start(&KEEPALIVE).await;
    let _client = s.hold_websocket().await;
    wait_for_open(&s, 1.0).await;
    assert_eq!(metric(&s, CLOSED, &BY_KEEPALIVE).await, 0.0);

    s.net.cut();
    let cut = Instant::now();
    let sidecar = &s.sidecar;
    let reaped = poll_until(REAP_WAIT, || async move {
        metrics(sidecar.admin)
            .await
            .is_some_and(|m| m.value(CLOSED, &BY_KEEPALIVE) == 1.0 && m.value(OPEN, &[]) == 0.0)
    })
    .await;
    let took = cut.elapsed();
    let last = metrics(sidecar.admin).await;
    assert!(
        reaped,
        "the vanished client was not reaped within {REAP_WAIT:?}: {CLOSED}{BY_KEEPALIVE:?} = \
         {:?}, {OPEN} = {:?}",
        last.as_ref().map(|m| m.value(CLOSED, &BY_KEEPALIVE)),
        last.as_ref().map(|m| m.value(OPEN, &[])),
    );
    eprintln!("reaped {took:?} after the cut (bound {REAP_BOUND:?})");
    assert!(
        took <= REAP_BOUND + REAP_SLACK,
        "reaped {took:?} after the cut, past the bound {REAP_BOUND:?} (+{REAP_SLACK:?})"
    );
    assert!(
        took >= IDLE,
        "reaped {took:?} after the cut, before the first keepalive probe could go out ({IDLE:?}): \
         something other than keepalive ended it"
    );
    // The one line the sidecar logs per connection names the client in the namespace.
    let client = format!("\"client.addr\":\"{}:", s.net.ns_ip);
    let client = client.as_str();
    wait_until("the sidecar logs the close", METRIC_WAIT, || async move {
        sidecar.logs().iter().any(|l| {
            l.contains("connection closed")
                && l.contains(client)
                && l.contains("\"close.reason\":\"keepalive\"")
        })
    })
    .await;
}

#[tokio::test]
async fn without_keepalive_a_vanished_client_keeps_its_slot() {
    let mut s = start(&["--tcp-keepalive", "off", "--tcp-user-timeout", "off"]).await;
    let _client = s.hold_websocket().await;
    wait_for_open(&s, 1.0).await;

    s.net.cut();
    let sidecar = &s.sidecar;
    let ended = poll_until(HOLD_WAIT, || async move {
        metrics(sidecar.admin)
            .await
            .is_some_and(|m| m.value(OPEN, &[]) != 1.0 || m.value(CLOSED, &BY_KEEPALIVE) != 0.0)
    })
    .await;
    assert!(
        !ended,
        "with keepalive off the cut connection must stay open for {HOLD_WAIT:?}, so the other \
         test measures keepalive"
    );
    assert_eq!(metric(&s, OPEN, &[]).await, 1.0);
    assert_eq!(metric(&s, CLOSED, &BY_KEEPALIVE).await, 0.0);
}

/// A sidecar on the root side of a fresh veth pair, in front of an echo app.
struct Setup {
    // Dropped in this order: the sidecar, then the app and the certificates, then the
    // namespace (the client, held by the test, is gone before any of them).
    sidecar: Sidecar,
    _app: EchoServer,
    _dir: tempfile::TempDir,
    net: Netns,
}

async fn start(flags: &[&str]) -> Setup {
    let net = Netns::create();
    net.wait_up().await;
    install_crypto_provider();
    let ca = TestCa::new("keepalive CA");
    let dir = tempfile::tempdir().unwrap();
    write_plain_pair(dir.path(), &ca.issue(LeafSpec::new(&[APP_NAME])));
    let app = EchoServer::start_tcp().await;
    let upstream = app.addr().to_string();
    let sidecar = Sidecar::spawn_listening(
        &format!("{}:0", net.root_ip),
        &serving_args(&upstream, dir.path(), flags),
    )
    .await;
    Setup {
        sidecar,
        _app: app,
        _dir: dir,
        net,
    }
}

impl Setup {
    /// Runs `apps/ws_hold.py` in the namespace: it opens a WebSocket through the sidecar, sees
    /// one echo, prints OK and then holds the connection without a byte more.
    async fn hold_websocket(&self) -> Process {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/apps/ws_hold.py");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.net.name, "python3", script])
            .arg(self.net.root_ip.to_string())
            .arg(self.sidecar.addr.port().to_string())
            .arg(APP_NAME)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("run `ip netns exec … python3` (iproute2 needed): {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let ok = spawn_collector(child.stdout.take(), &output, "OK");
        spawn_collector(child.stderr.take(), &output, "");
        let client = Process {
            name: "ws_hold.py (python3 in the namespace)",
            child,
            output,
        };
        client.wait_for_line(ok, CLIENT_WAIT).await;
        client
    }
}

/// Scrapes the admin endpoint; `None` if it did not answer 200.
async fn metrics(admin: std::net::SocketAddr) -> Option<Metrics> {
    match http_get(admin, "/metrics").await {
        Ok((200, body)) => Some(Metrics::parse(&body)),
        _ => None,
    }
}

async fn metric(s: &Setup, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics(s.sidecar.admin)
        .await
        .expect("/metrics answers 200")
        .value(name, labels)
}

/// Waits until the open-connections gauge is `value` (it trails the client's handshake).
async fn wait_for_open(s: &Setup, value: f64) {
    let admin = s.sidecar.admin;
    wait_until(&format!("{OPEN} is {value}"), METRIC_WAIT, || async move {
        metrics(admin)
            .await
            .is_some_and(|m| m.value(OPEN, &[]) == value)
    })
    .await;
}

/// A network namespace joined to the root one by a veth pair on a free private /30, removed
/// (namespace and both veth ends) on drop, also when the test panics.
struct Netns {
    name: String,
    veth_root: String,
    veth_ns: String,
    /// The root side's address: the sidecar listens here.
    root_ip: Ipv4Addr,
    /// The namespace side's address: the client's.
    ns_ip: Ipv4Addr,
}

/// The namespace side's MAC address, known in advance for the permanent neighbour entry
/// (locally administered; it only has to be unique on its own veth link).
const NS_MAC: &str = "02:77:73:6b:61:02";
/// How long a fresh veth pair may take to report carrier.
const LINK_WAIT: Duration = Duration::from_secs(5);

/// Tells apart the namespaces of tests run in one process.
static NETNS_SEQ: AtomicU32 = AtomicU32::new(0);

impl Netns {
    fn create() -> Netns {
        let seq = NETNS_SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let (root_ip, ns_ip) = free_slash30(pid.wrapping_mul(4).wrapping_add(seq));
        let id = format!("{pid}-{seq}");
        // Interface names are at most 15 bytes: "wska" + pid (≤ 7 digits) + "-" + seq + "r".
        let net = Netns {
            name: format!("wss-keepalive-{id}"),
            veth_root: format!("wska{id}r"),
            veth_ns: format!("wska{id}n"),
            root_ip,
            ns_ip,
        };
        let (ns, root, peer) = (&net.name, &net.veth_root, &net.veth_ns);
        // The guard exists before anything is created: a failing step still cleans up.
        ip(&format!("netns add {ns}"));
        ip(&format!("link add {root} type veth peer name {peer}"));
        ip(&format!("link set {peer} netns {ns}"));
        ip(&format!("-n {ns} link set {peer} address {NS_MAC}"));
        ip(&format!("-n {ns} addr add {ns_ip}/30 dev {peer}"));
        ip(&format!("-n {ns} link set lo up"));
        ip(&format!("-n {ns} link set {peer} up"));
        ip(&format!("addr add {root_ip}/30 dev {root}"));
        ip(&format!("link set {root} up"));
        // A permanent neighbour entry, kept when the carrier goes: without it the root side
        // would re-ARP after the cut, fail, and report EHOSTUNREACH to the socket (an ICMP
        // error the kernel then gives instead of ETIMEDOUT), not a client that just went quiet.
        ip(&format!(
            "neigh replace {ns_ip} lladdr {NS_MAC} dev {root} nud permanent"
        ));
        net
    }

    /// Waits until the root side's link is up (both ends up, carrier on).
    async fn wait_up(&self) {
        let operstate = format!("/sys/class/net/{}/operstate", self.veth_root);
        let operstate = operstate.as_str();
        wait_until(&format!("{} is up", self.veth_root), LINK_WAIT, || async move {
            std::fs::read_to_string(operstate).is_ok_and(|state| state.trim() == "up")
        })
        .await;
    }

    /// Cuts the link from inside the namespace: the client's socket stays open and sends
    /// nothing (no FIN, no reset), and the root side keeps its address, route and neighbour,
    /// so the sidecar's probes just go unanswered.
    fn cut(&mut self) {
        ip(&format!("-n {} link set {} down", self.name, self.veth_ns));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one veth end deletes both; best effort, each may already be gone.
        for args in [
            vec!["link", "del", self.veth_root.as_str()],
            vec!["netns", "del", self.name.as_str()],
        ] {
            let _ = std::process::Command::new("ip")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs `ip COMMAND` (split at spaces), failing the test with its stderr if it fails.
fn ip(command: &str) {
    let output = std::process::Command::new("ip")
        .args(command.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("the keepalive tests need `ip` (iproute2): {e}"));
    assert!(
        output.status.success(),
        "`ip {command}` failed (the keepalive tests need root, CAP_NET_ADMIN): {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// A /30 in 10.213.0.0/16 that no interface or route of this host covers, searched from
/// `seed`: (root side .1, namespace side .2).
fn free_slash30(seed: u32) -> (Ipv4Addr, Ipv4Addr) {
    for i in 0..64 {
        let block = (seed.wrapping_add(i * 997)) % (1 << 14);
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + block * 4;
        if (0..4).all(|offset| !routed_here(Ipv4Addr::from(base + offset))) {
            return (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        }
    }
    panic!("no free /30 in 10.213.0.0/16 after 64 tries");
}

/// Whether `addr` is local or on a directly connected network (not only via a gateway).
fn routed_here(addr: Ipv4Addr) -> bool {
    let output = std::process::Command::new("ip")
        .args(["-4", "route", "get", &addr.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("the keepalive tests need `ip` (iproute2): {e}"));
    // No route at all ("Network is unreachable") is free too.
    output.status.success() && !String::from_utf8_lossy(&output.stdout).contains(" via ")
}
