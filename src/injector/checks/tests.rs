use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::*;
use crate::injector::annotations::sidecar_args;

fn run(annotations: &[(&str, &str)], spec: serde_json::Value) -> Result<Vec<String>, Denial> {
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (format!("wss-sidecar.io/{k}"), v.to_string()))
        .collect();
    let args = sidecar_args(&annotations, &[], crate::config::proxy_flags())?;
    let pod: Pod = serde_json::from_value(json!({"metadata": {}, "spec": spec})).unwrap();
    check(&pod, &args)
}

fn app() -> serde_json::Value {
    json!({"containers": [{"name": "app"}]})
}

#[test]
fn a_plain_pod_passes_without_warnings() {
    assert_eq!(run(&[("upstream-port", "8080")], app()), Ok(vec![]));
}

#[test]
fn path_flags_come_from_the_clap_definition() {
    // Every PathBuf flag is checked, without a list of them here.
    for flag in [
        "client-ca",
        "acme-ca-root",
        "acme-eab-hmac-key-file",
        "cert-dir",
    ] {
        let err = run(&[(flag, "/etc/app/x")], app()).unwrap_err().0;
        assert!(
            err.starts_with(&format!("wss-sidecar.io/{flag}: ")),
            "{err}"
        );
    }
    assert!(
        run(
            &[("client-ca", "/etc/ssl/certs/ca-certificates.crt")],
            app()
        )
        .is_ok()
    );
    let mounted = [
        ("client-ca", "/etc/wss/ca/ca.crt"),
        ("mounts", "secret:client-ca:/etc/wss/ca"),
    ];
    assert!(run(&mounted, app()).is_ok());
    let err = run(&[("client-ca", "/etc/ssl/certs/../../x")], app())
        .unwrap_err()
        .0;
    assert!(err.contains(".."), "{err}");
}

#[test]
fn privileged_ports_warn() {
    let warnings = run(&[("listen", "[::]:443")], app()).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("wss-sidecar.io/listen: port 443"),
        "{warnings:?}"
    );
}
