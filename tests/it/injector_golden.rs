//! Golden tests of the injector: each `tests/injector/*.pod.yaml` in, its
//! `*.expected.json` (the outcome, the JSON Patch and the patched pod) out. JSON, not YAML:
//! YAML 1.1 readers (kubectl's among them) take an unquoted `off` or `no` for a boolean.
//!
//! Cases named `plain-*` run in plain mode as on a server older than 1.29, the rest in native
//! mode on a current one; `image-uid-*` with `--sidecar-uid none`; the namespace is the pod's
//! own. `UPDATE_GOLDEN=1 cargo nextest run
//! --test it injector_golden` rewrites the expected files; without it, a stale, missing or
//! orphaned expected file fails the suite.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use wss_sidecar::config::proxy_flags;
use wss_sidecar::injector::annotations::PREFIX;
use wss_sidecar::injector::{Outcome, inject};

use crate::support::injector::template;

/// Tells a reader of an expected file where it comes from.
const GENERATED: &str = "tests/it/injector_golden.rs from the .pod.yaml beside this file; \
                         refresh: UPDATE_GOLDEN=1 cargo nextest run --test it injector_golden";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/injector")
}

/// Every case: (name, pod as JSON).
fn cases() -> Vec<(String, Value)> {
    let mut cases: Vec<(String, Value)> = std::fs::read_dir(golden_dir())
        .expect("tests/injector exists")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".pod.yaml")?
                .to_string();
            let text = std::fs::read_to_string(&path).expect("pod file reads");
            let pod: Value = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
            Some((name, pod))
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(cases.len() >= 10, "golden cases missing: {cases:?}");
    cases
}

/// Runs the injector on one case: `plain-*` cases in plain mode on a server older than 1.29
/// (so without the app's `preStop: sleep`, which needs 1.30), the rest native on a current one.
fn run(name: &str, pod: &Value) -> Result<Outcome, String> {
    let plain = name.starts_with("plain-");
    let mut flags = vec!["--sidecar-mode", if plain { "plain" } else { "native" }];
    if name.starts_with("image-uid-") {
        flags.extend(["--sidecar-uid", "none"]);
    }
    let mut template = template(&flags);
    template.prestop_sleep = !plain;
    let typed: Pod = serde_json::from_value(pod.clone()).expect("case is a Pod");
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    inject(&typed, namespace, &template).map_err(|d| d.0)
}

/// What the expected file holds for one case; applying the patch is part of it.
fn render(name: &str, pod: &Value) -> String {
    let expected = match run(name, pod) {
        Ok(Outcome::Skipped(reason)) => {
            json!({"generated": GENERATED, "outcome": "skipped", "reason": reason})
        }
        Err(message) => json!({"generated": GENERATED, "outcome": "denied", "message": message}),
        Ok(Outcome::Patched(patch)) => {
            let mut patched = pod.clone();
            json_patch::patch(&mut patched, &patch)
                .unwrap_or_else(|e| panic!("{name}: the patch does not apply: {e}"));
            json!({"generated": GENERATED, "outcome": "patched", "patch": patch, "pod": patched})
        }
    };
    let mut text = serde_json::to_string_pretty(&expected).expect("JSON encodes");
    text.push('\n');
    text
}

/// Compares (or, with `UPDATE_GOLDEN=1`, rewrites) one expected file; returns the problem.
fn check(path: &Path, actual: &str, update: bool) -> Option<String> {
    let current = std::fs::read_to_string(path).ok();
    if current.as_deref() == Some(actual) {
        return None;
    }
    if update {
        std::fs::write(path, actual).expect("golden file writes");
        return None;
    }
    Some(match current {
        None => format!("{} is missing", path.display()),
        Some(_) => format!("{} is stale", path.display()),
    })
}

#[test]
fn expected_files_match_and_none_is_stale_or_orphaned() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let cases = cases();
    let mut problems = Vec::new();
    for (name, pod) in &cases {
        let path = golden_dir().join(format!("{name}.expected.json"));
        problems.extend(check(&path, &render(name, pod), update));
    }
    let names: BTreeSet<&str> = cases.iter().map(|(n, _)| n.as_str()).collect();
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(name) = file.strip_suffix(".expected.json")
            && !names.contains(name)
        {
            problems.push(format!("{file} has no {name}.pod.yaml: delete it"));
        }
    }
    assert!(
        problems.is_empty(),
        "golden files out of date (review the change, then refresh with \
         UPDATE_GOLDEN=1 cargo nextest run --test it injector_golden):\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_stale_expected_file_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.expected.json");
    let (name, pod) = &cases()[0];
    let good = render(name, pod);
    std::fs::write(&path, good.replace("outcome", "outcome ")).unwrap();
    assert!(check(&path, &good, false).unwrap().contains("stale"));
    assert!(
        check(&dir.path().join("none.yaml"), &good, false)
            .unwrap()
            .contains("missing")
    );
    assert_eq!(check(&path, &good, true), None, "UPDATE_GOLDEN rewrites");
    assert_eq!(check(&path, &good, false), None);
}

#[test]
fn injecting_an_injected_pod_changes_nothing() {
    for (name, pod) in cases() {
        let Ok(Outcome::Patched(patch)) = run(&name, &pod) else {
            continue;
        };
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        match run(&name, &patched) {
            Ok(Outcome::Skipped("already injected")) => {}
            other => panic!("{name}: injecting again gave {other:?}"),
        }
        // Without the status annotation, the container alone still marks it injected.
        patched["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("wss-sidecar.io/status");
        assert!(
            matches!(
                run(&name, &patched),
                Ok(Outcome::Skipped("already injected"))
            ),
            "{name}: a pod holding the wss-sidecar container was injected again"
        );
    }
}

/// The sidecar's place and shape in every patched pod, asserted beside the golden text.
#[test]
fn patched_pods_hold_a_locked_down_sidecar_in_the_right_place() {
    let mut patched_cases = 0;
    for (name, pod) in cases() {
        let Ok(Outcome::Patched(patch)) = run(&name, &pod) else {
            continue;
        };
        patched_cases += 1;
        let mut out = pod.clone();
        json_patch::patch(&mut out, &patch).unwrap();
        let spec = &out["spec"];
        let sidecar = if name.starts_with("plain-") {
            let containers = spec["containers"].as_array().unwrap();
            let last = containers.last().unwrap();
            assert!(last.get("restartPolicy").is_none(), "{name}");
            last.clone()
        } else {
            let first = spec["initContainers"][0].clone();
            assert_eq!(first["restartPolicy"], "Always", "{name}");
            // Started, not ready: the app is never held back by a CA.
            assert_eq!(
                first["startupProbe"]["httpGet"]["path"], "/startupz",
                "{name}"
            );
            first
        };
        assert_eq!(sidecar["name"], "wss-sidecar", "{name}");
        assert_eq!(
            out["metadata"]["annotations"]["wss-sidecar.io/status"],
            "injected"
        );
        let sc = &sidecar["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        if name.starts_with("image-uid-") {
            // --sidecar-uid none: the image's USER (OpenShift assigns its own UID).
            assert!(sc.get("runAsUser").is_none(), "{name}: {sc}");
            assert!(sc.get("runAsGroup").is_none(), "{name}: {sc}");
        } else {
            assert!(sc["runAsUser"].as_i64().unwrap() > 0, "{name}");
        }
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        assert!(
            sidecar["resources"]["requests"]["memory"].is_string(),
            "{name}"
        );
        assert_eq!(sidecar["ports"][0]["name"], "wss", "{name}");
        // `--http-listen` is a named port too, so a Service on port 80 can target it.
        let http_port = sidecar["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "wss-http")
            .map(|p| p["containerPort"].as_u64().unwrap());
        let http_listen = pod["metadata"]["annotations"]["wss-sidecar.io/http-listen"].as_str();
        let listen_port = http_listen.map(|a| a.rsplit(':').next().unwrap().parse().unwrap());
        assert_eq!(http_port, listen_port, "{name}: the wss-http port");
        assert_eq!(
            sidecar["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace",
            "{name}"
        );
        for mount in sidecar["volumeMounts"].as_array().into_iter().flatten() {
            assert!(
                mount.get("subPath").is_none(),
                "{name}: subPath mounts never update"
            );
        }
        let env: Vec<(&str, &str)> = sidecar["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let field = e["valueFrom"]["fieldRef"]["fieldPath"]
                    .as_str()
                    .unwrap_or("");
                (e["name"].as_str().unwrap(), field)
            })
            .collect();
        assert!(
            env.contains(&("POD_UID", "metadata.uid")),
            "{name}: {env:?}"
        );
        // The sidecar's preStop starts its lame duck (exec: the image has no shell), on the
        // admin port it serves; without an admin port, SIGTERM starts it.
        let args: Vec<&str> = sidecar["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let admin = sidecar["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "wss-admin")
            .map(|p| p["containerPort"].as_u64().unwrap());
        match admin {
            Some(port) => assert_eq!(
                sidecar["lifecycle"]["preStop"]["exec"]["command"],
                json!([
                    "/usr/local/bin/wss-sidecar",
                    "lame-duck",
                    format!("--admin=127.0.0.1:{port}")
                ]),
                "{name}"
            ),
            None => assert!(sidecar.get("lifecycle").is_none(), "{name}"),
        }
        // The injected defaults, unless an annotation sets the flag.
        let annotations = &pod["metadata"]["annotations"];
        let seconds = |flag: &str, default: u64| -> u64 {
            let value = annotations[format!("{PREFIX}{flag}")].as_str();
            let value = value.map_or(default, |v| v.trim_end_matches('s').parse().unwrap());
            assert!(
                args.contains(&format!("--{flag}={value}s").as_str()),
                "{name}: {args:?}"
            );
            value
        };
        let stop = seconds("lame-duck", 10) + seconds("drain-timeout", 15);
        let redirect = annotations[format!("{PREFIX}redirect-port")]
            .as_str()
            .unwrap_or("443");
        assert!(
            args.contains(&format!("--redirect-port={redirect}").as_str()),
            "{name}"
        );
        // Every app container is still there; one without a preStop now sleeps through the
        // sidecar's lame duck and drain first (unless opted out).
        let opted_out =
            annotations[format!("{PREFIX}app-prestop")] == "false" || name.starts_with("plain-");
        for (i, container) in pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let mut after = spec["containers"][i].clone();
            if container["lifecycle"]["preStop"].is_null() && !opted_out {
                let added = after["lifecycle"]
                    .as_object_mut()
                    .unwrap()
                    .remove("preStop")
                    .unwrap();
                assert_eq!(added, json!({"sleep": {"seconds": stop}}), "{name}");
                if container.get("lifecycle").is_none() {
                    assert_eq!(after["lifecycle"], json!({}), "{name}");
                    after.as_object_mut().unwrap().remove("lifecycle");
                }
            }
            assert_eq!(&after, container, "{name}: app container {i}");
        }
    }
    assert!(patched_cases >= 4, "only {patched_cases} patched cases");
}

/// Flags that exclude each other cannot share a pod, so `every-annotation-*` cases hold
/// the ones `every-annotation` cannot; together they must set every proxy flag.
#[test]
fn every_proxy_flag_is_covered_by_the_every_annotation_cases() {
    let cases: Vec<(String, Value)> = cases()
        .into_iter()
        .filter(|(n, _)| n == "every-annotation" || n.starts_with("every-annotation-"))
        .collect();
    assert!(
        cases.iter().any(|(n, _)| n == "every-annotation"),
        "every-annotation.pod.yaml exists"
    );
    let mut set = BTreeSet::new();
    for (name, pod) in &cases {
        assert!(
            matches!(run(name, pod), Ok(Outcome::Patched(_))),
            "{name}: every annotation case must be injected, not denied"
        );
        set.extend(
            pod["metadata"]["annotations"]
                .as_object()
                .unwrap()
                .keys()
                .cloned(),
        );
    }
    let missing: Vec<&str> = proxy_flags()
        .names()
        .filter(|flag| !set.contains(&format!("{PREFIX}{flag}")))
        .collect();
    assert!(
        missing.is_empty(),
        "the tests/injector/every-annotation*.pod.yaml cases set no annotation for {missing:?}: \
         add one with a valid value (a flag excluding one already there goes into an \
         every-annotation-* case), then refresh the golden files"
    );
}
