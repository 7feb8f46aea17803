//! Version skew (issue 15, acceptance 5): with a sidecar image one release older than the
//! injector, the injected arguments hold only flags that release has (checked against its
//! recorded list, `src/injector/releases/0.1.0.flags`), the probes and hooks are ones it serves,
//! what the injector leaves out is said in an admission warning, and an annotation asking for a
//! newer flag is refused naming it; with the injector's own release everything is injected.

use std::collections::BTreeSet;

use base64::Engine;
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use wss_sidecar::config::{Cli, Command};
use wss_sidecar::injector::{Outcome, SidecarTemplate, inject, stop_warnings};

use crate::support::injector::{TestInjector, admission_review};

/// The release before this one, and its image.
const OLD: &str = "0.1.0";
const OLD_IMAGE: &str = "registry.example/wss-sidecar:0.1.0";

/// What 0.1.0's admin port answered (`src/http/health.rs` at 09eaae1: `/healthz`, `/livez`,
/// `/readyz`; no `/startupz`).
const OLD_PATHS: [&str; 3] = ["/healthz", "/livez", "/readyz"];

/// The recorded flags of 0.1.0, read from the file the injector embeds.
fn old_flags() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/injector/releases/0.1.0.flags"
    );
    std::fs::read_to_string(path)
        .expect("the recorded 0.1.0 flag list")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// `wss-sidecar injector --cert-dir / --sidecar-mode native FLAGS…` → its configuration, or
/// the error as the binary would print it.
fn configure(flags: &[&str]) -> Result<SidecarTemplate, String> {
    let argv = [
        "wss-sidecar",
        "injector",
        "--cert-dir",
        "/",
        "--sidecar-mode",
        "native",
    ];
    let cli = Cli::try_parse_from(argv.iter().chain(flags).copied()).map_err(|e| e.to_string())?;
    let Command::Injector(args) = cli.command else {
        panic!("not the injector: {flags:?}");
    };
    args.into_config()
        .map(|config| config.template)
        .map_err(|e| e.to_string())
}

fn configured(flags: &[&str]) -> SidecarTemplate {
    configure(flags).unwrap_or_else(|e| panic!("injector flags {flags:?}: {e}"))
}

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "echo",
            "namespace": "apps",
            "labels": {"wss-sidecar.io/inject": "true"},
            "annotations": annotations
        },
        "spec": {"containers": [{"name": "app", "image": "registry.example/echo:1.0"}]}
    })
}

/// The pod `template` makes of `pod`, or the refusal.
fn injected(template: &SidecarTemplate, pod: &Value) -> Result<Value, String> {
    let typed: Pod = serde_json::from_value(pod.clone()).expect("a Pod");
    match inject(&typed, "apps", template) {
        Ok(Outcome::Patched(patch)) => {
            let mut patched = pod.clone();
            json_patch::patch(&mut patched, &patch).expect("the patch applies");
            Ok(patched)
        }
        Ok(Outcome::Skipped(why)) => panic!("skipped: {why}"),
        Err(denial) => Err(denial.0),
    }
}

fn sidecar(patched: &Value) -> &Value {
    let sidecar = &patched["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "wss-sidecar", "{patched}");
    sidecar
}

/// The long flags of the container's `proxy` arguments, without `--` and value.
fn flags_of(sidecar: &Value) -> Vec<String> {
    let args = sidecar["args"].as_array().expect("args");
    assert_eq!(args[0], "proxy", "{sidecar}");
    args[1..]
        .iter()
        .map(|a| {
            let a = a.as_str().expect("a string argument");
            let flag = a
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("not a flag: {a}"));
            flag.split('=').next().unwrap_or(flag).to_string()
        })
        .collect()
}

/// The HTTP paths of the container's probes, by probe.
fn probe_paths(sidecar: &Value) -> Vec<(&'static str, String)> {
    ["startupProbe", "readinessProbe", "livenessProbe"]
        .into_iter()
        .map(|probe| {
            let path = sidecar[probe]["httpGet"]["path"].as_str();
            (
                probe,
                path.unwrap_or_else(|| panic!("no {probe}: {sidecar}"))
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn an_older_sidecar_gets_only_what_its_release_has() {
    let old = old_flags();
    assert!(
        old.contains("drain-timeout") && !old.contains("lame-duck"),
        "{old:?}"
    );
    let template = configured(&["--sidecar-image", OLD_IMAGE]);
    // Annotations of flags 0.1.0 has pass, together with the injector's own defaults.
    let pod = pod(json!({
        "wss-sidecar.io/upstream-port": "3000",
        "wss-sidecar.io/idle-timeout": "5m",
        "wss-sidecar.io/cert-secret-volume": "echo-tls",
    }));
    let patched = injected(&template, &pod).expect("admitted");
    let sidecar = sidecar(&patched);
    let flags = flags_of(sidecar);
    for flag in &flags {
        assert!(
            old.contains(flag),
            "--{flag} is not a flag of {OLD}: {sidecar}"
        );
    }
    for flag in ["drain-timeout", "upstream", "idle-timeout", "cert-dir"] {
        assert!(
            flags.iter().any(|f| f == flag),
            "--{flag} missing: {flags:?}"
        );
    }
    for (probe, path) in probe_paths(sidecar) {
        assert!(
            OLD_PATHS.contains(&path.as_str()),
            "{probe} {path}: {OLD} serves no such path"
        );
    }
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/healthz");
    // 0.1.0 has no `lame-duck` command for the preStop hook to run.
    assert!(sidecar.get("lifecycle").is_none(), "{sidecar}");
    assert_eq!(sidecar["image"], OLD_IMAGE);

    // What was left out is said with the admission.
    let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
    let warnings = stop_warnings(&typed, &template);
    let skew = warnings
        .iter()
        .find(|w| w.contains("wss-sidecar 0.1.0"))
        .unwrap_or_else(|| panic!("no skew warning: {warnings:?}"));
    for said in [
        "--lame-duck=10s",
        "--redirect-port=443",
        "/healthz",
        "preStop",
    ] {
        assert!(skew.contains(said), "{said} not in {skew}");
    }
}

#[test]
fn an_annotation_or_default_asking_for_a_newer_flag_is_refused_by_name() {
    let template = configured(&["--sidecar-image", OLD_IMAGE]);
    for flag in ["redirect-port", "lame-duck", "acme-skip-self-check"] {
        assert!(!old_flags().contains(flag), "{flag}");
        let key = format!("wss-sidecar.io/{flag}");
        let value = if flag == "redirect-port" {
            "8443"
        } else {
            "true"
        };
        let value = if flag == "lame-duck" { "5s" } else { value };
        let err = injected(&template, &pod(json!({ key.clone(): value }))).unwrap_err();
        assert!(err.starts_with(&format!("{key}: ")), "{err}");
        assert!(
            err.contains("wss-sidecar 0.1.0") && err.contains(&format!("--{flag}")),
            "{err}"
        );
    }
    // The injector's own --sidecar-default of such a flag fails at start-up, naming it.
    let err = configure(&[
        "--sidecar-image",
        OLD_IMAGE,
        "--sidecar-default",
        "redirect-port=443",
    ])
    .unwrap_err();
    assert!(
        err.starts_with("--sidecar-default: redirect-port: "),
        "{err}"
    );
    assert!(err.contains(OLD), "{err}");
}

#[test]
fn the_version_flag_speaks_for_digests_and_custom_tags() {
    let digest = "registry.example/wss-sidecar@sha256:0123abcd";
    let template = configured(&["--sidecar-image", digest, "--sidecar-version", OLD]);
    let patched = injected(&template, &pod(json!({}))).expect("admitted");
    let flags = flags_of(sidecar(&patched));
    assert!(!flags.iter().any(|f| f == "lame-duck"), "{flags:?}");
    // Unknown: the injector's own release, so everything (the start-up log warns).
    let template = configured(&["--sidecar-image", "registry.example/wss-sidecar:custom"]);
    let patched = injected(&template, &pod(json!({}))).expect("admitted");
    assert!(flags_of(sidecar(&patched)).iter().any(|f| f == "lame-duck"));
    let err = configure(&["--sidecar-version", "latest"]).unwrap_err();
    assert!(err.starts_with("--sidecar-version: "), "{err}");
}

#[test]
fn the_injectors_own_release_gets_everything() {
    // The default image is fully qualified and of this release.
    let template = configured(&[]);
    let own = env!("CARGO_PKG_VERSION");
    assert_eq!(
        template.image,
        format!("ghcr.io/wss-sidecar/wss-sidecar:{own}")
    );
    let pod = pod(json!({"wss-sidecar.io/redirect-port": "8443"}));
    let patched = injected(&template, &pod).expect("admitted");
    let sidecar = sidecar(&patched);
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for arg in [
        "--lame-duck=10s",
        "--drain-timeout=15s",
        "--redirect-port=8443",
    ] {
        assert!(args.contains(&arg), "{arg} missing: {args:?}");
    }
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/startupz");
    assert_eq!(
        sidecar["lifecycle"]["preStop"]["exec"]["command"][1], "lame-duck",
        "{sidecar}"
    );
    let typed: Pod = serde_json::from_value(pod).unwrap();
    let warnings = stop_warnings(&typed, &template);
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("older than this injector")),
        "{warnings:?}"
    );
}

/// Through the webhook as the API server calls it: the warning is in the AdmissionReview, and
/// the refusal names the annotation.
#[tokio::test]
async fn the_webhook_warns_and_refuses_for_an_older_sidecar() {
    let injector = TestInjector::start(&["--sidecar-version", OLD]).await;
    let review = |pod: Value| {
        let body = serde_json::to_vec(&admission_review("u-15", "apps", &pod)).unwrap();
        let injector = &injector;
        async move {
            let (status, body) = injector.request("POST", "/mutate", &body).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let answer: Value = serde_json::from_slice(&body).expect("JSON");
            answer["response"].clone()
        }
    };
    let response = review(pod(json!({}))).await;
    assert_eq!(response["allowed"], true, "{response}");
    let warnings = response["warnings"].as_array().expect("warnings");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap_or("")
            .contains("left out --lame-duck=10s")),
        "{response}"
    );
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut patched = pod(json!({}));
    json_patch::patch(&mut patched, &patch).unwrap();
    let old = old_flags();
    assert!(
        flags_of(sidecar(&patched)).iter().all(|f| old.contains(f)),
        "{patched}"
    );

    let response = review(pod(json!({"wss-sidecar.io/lame-duck": "5s"}))).await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("wss-sidecar.io/lame-duck") && message.contains(OLD),
        "{message}"
    );
    injector.stop().await;
}
