//! Acceptance 4: the sidecar's default listener (`[::]:8443`, IPV6_V6ONLY off) serves the echo
//! over the pod's IPv6 address (`status.podIPs` has an `fd10:244::` address on this dual-stack
//! cluster) and over its IPv4 one, and the kubelet's probes (to `status.podIP`) pass.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::cluster::{Cluster, ws_connect_retrying};
use crate::support::{LeafSpec, TestCa, assert_echo, client_config, install_crypto_provider};

use super::SidecarPod;

/// Every address in the pod's `status.podIPs`.
fn pod_ips(pod: &Value) -> Vec<IpAddr> {
    pod.pointer("/status/podIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["ip"].as_str()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_echo_answers_over_the_pods_ipv6_and_ipv4_addresses_with_the_default_listen() {
    install_crypto_provider();
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("dual-stack").await;
    let ca = TestCa::new("dual-stack test CA");
    let pair = ca.issue(LeafSpec::new(&["echo.test"]));
    cluster.put_tls_secret(&ns.name, "echo-tls", &pair).await;
    let pod = SidecarPod {
        init_before: "",
        mounts: "        - { name: tls, mountPath: /tls, readOnly: true }\n",
        volumes: "    - name: tls\n      secret: { secretName: echo-tls }\n",
    };
    // No --listen / --admin-listen: the defaults are under test.
    let yaml = pod.yaml("echo", "app: echo", "default", &["--cert-dir=/tls"]);
    cluster.apply(&ns.name, &yaml).await;
    let pods = cluster.wait_ready_pods(&ns.name, "app=echo", 1).await;
    let ips = pod_ips(&pods[0]);
    let v6 = ips.iter().copied().find(IpAddr::is_ipv6);
    let v6 = v6.unwrap_or_else(|| panic!("no IPv6 address in status.podIPs: {ips:?}"));
    let v4 = ips.iter().copied().find(IpAddr::is_ipv4);
    let v4 = v4.unwrap_or_else(|| panic!("no IPv4 address in status.podIPs: {ips:?}"));
    eprintln!("pod IPs: {ips:?}");

    let config = client_config(&[ca.cert_der()], &[]);
    for ip in [v6, v4] {
        let addr = SocketAddr::new(ip, 8443);
        let mut ws =
            ws_connect_retrying(addr, "echo.test", config.clone(), Duration::from_secs(30)).await;
        assert_echo(&mut ws, Message::text(format!("over {ip}"))).await;
    }
}
