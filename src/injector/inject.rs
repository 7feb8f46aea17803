//! The decision for one pod: skip it, deny it, or the patch that adds the sidecar.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::annotations::{self, APP_PRESTOP, Denial, INJECT, PREFIX, STATUS};
use super::container::{CONTAINER_NAME, SidecarMode, SidecarTemplate, volumes};
use super::flags::ProxyLine;
use super::patch::PatchBuilder;

/// Namespaces the injector never touches, whatever their pods say: the cluster's own.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The value of [`STATUS`] on an injected pod.
pub const INJECTED: &str = "injected";

/// The pod's grace period when it sets none (`DefaultTerminationGracePeriodSeconds`,
/// k8s.io/api core/v1/types.go).
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// What to do with a pod.
#[derive(Debug)]
pub enum Outcome {
    /// Admit unchanged, for this reason.
    Skipped(&'static str),
    /// Admit with this patch.
    Patched(json_patch::Patch),
}

/// Decides for `pod`, created in `namespace`.
pub fn inject(pod: &Pod, namespace: &str, template: &SidecarTemplate) -> Result<Outcome, Denial> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECT))
        .is_some_and(|v| v == "true");
    if !labelled {
        return Ok(Outcome::Skipped("not labelled wss-sidecar.io/inject=true"));
    }
    if SYSTEM_NAMESPACES.contains(&namespace) {
        return Ok(Outcome::Skipped("system namespace"));
    }
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return Ok(Outcome::Skipped("hostNetwork pod"));
    }
    let annotations = meta.annotations.clone().unwrap_or_default();
    let has_container = spec.is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == CONTAINER_NAME)
    });
    if annotations.contains_key(STATUS) || has_container {
        return Ok(Outcome::Skipped("already injected"));
    }

    template
        .release
        .check_annotations(&annotations, template.flags)?;
    let args = annotations::sidecar_args(&annotations, &template.defaults, template.flags)?;
    let stop = stop_plan(pod, &args.args, template)?;
    let container = to_value(&template.container(&args))?;
    let mut patch = PatchBuilder::default();
    match template.mode {
        SidecarMode::Native => {
            let exists = spec.is_some_and(|s| s.init_containers.is_some());
            patch.add_to_list(&["spec", "initContainers"], exists, true, vec![container]);
        }
        // Last, so `kubectl logs` and `exec` still default to the app.
        SidecarMode::Plain => {
            patch.add_to_list(&["spec", "containers"], true, false, vec![container]);
        }
    }
    if let (Some(seconds), Some(spec)) = (stop.app_sleep, spec) {
        let sleep = json!({"sleep": {"seconds": seconds}});
        for (i, app) in spec.containers.iter().enumerate() {
            let index = i.to_string();
            match &app.lifecycle {
                Some(lifecycle) if lifecycle.pre_stop.is_some() => {}
                Some(_) => patch.add(
                    &["spec", "containers", &index, "lifecycle", "preStop"],
                    sleep.clone(),
                ),
                None => patch.add(
                    &["spec", "containers", &index, "lifecycle"],
                    json!({"preStop": sleep}),
                ),
            }
        }
    }
    let volumes = volumes(&args)
        .iter()
        .map(to_value)
        .collect::<Result<Vec<_>, _>>()?;
    let exists = spec.is_some_and(|s| s.volumes.is_some());
    patch.add_to_list(&["spec", "volumes"], exists, false, volumes);
    patch.add_to_map(
        &["metadata", "annotations"],
        meta.annotations.is_some(),
        STATUS,
        Value::String(INJECTED.into()),
    );
    // The same key as a label, for selectors: the chart's PodMonitor scrapes injected pods by it.
    patch.add_to_map(
        &["metadata", "labels"],
        meta.labels.is_some(),
        STATUS,
        Value::String(INJECTED.into()),
    );
    Ok(match patch.finish() {
        Some(patch) => Outcome::Patched(patch),
        None => Outcome::Skipped("nothing to add"),
    })
}

/// The admission warnings about how the injected pod starts and stops: what an older sidecar
/// release goes without (`skew`: its lame duck, `/startupz`), a grace period shorter than the
/// sidecar's lame duck and drain, or no app `preStop: sleep` on a server older than 1.30.
/// Empty for a pod `inject` skips or denies.
pub fn stop_warnings(pod: &Pod, template: &SidecarTemplate) -> Vec<String> {
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let Ok(args) = annotations::sidecar_args(&annotations, &template.defaults, template.flags)
    else {
        return Vec::new();
    };
    let Ok(plan) = stop_plan(pod, &args.args, template) else {
        return Vec::new();
    };
    template
        .release
        .warning()
        .into_iter()
        .chain(plan.warnings)
        .collect()
}

/// How the injected pod stops.
struct StopPlan {
    /// The `preStop: sleep` seconds for app containers without a preStop, if any.
    app_sleep: Option<i64>,
    /// What to tell the user about it.
    warnings: Vec<String>,
}

/// The app must outlive the sidecar's lame duck and drain: while it drains, the sidecar still
/// forwards to the app, so an app that exits first turns new and live connections into 502s
/// and resets. In native mode the app gets SIGTERM when its own preStop ends, the sidecar only
/// once every app container has exited (pkg/kubelet/kuberuntime/
/// kuberuntime_termination_order.go); so the app sleeps `lame-duck + drain-timeout` first.
fn stop_plan(pod: &Pod, args: &[String], template: &SidecarTemplate) -> Result<StopPlan, Denial> {
    let line: ProxyLine = template
        .flags
        .read_line(args.get(1..).unwrap_or_default())
        .map_err(|why| Denial(format!("the {PREFIX}* annotations do not combine: {why}")))?;
    let wanted = match pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(APP_PRESTOP))
        .map(String::as_str)
    {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(Denial(format!(
                "{APP_PRESTOP}: expected \"true\" or \"false\", got {other:?}"
            )));
        }
    };
    let stop = line.lame_duck + line.drain_timeout;
    let seconds = i64::try_from(stop.as_secs())
        .unwrap_or(i64::MAX)
        .saturating_add(i64::from(stop.subsec_nanos() > 0));
    let spec = pod.spec.as_ref();
    let grace = spec
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    let needs_sleep = spec.is_some_and(|s| {
        s.containers.iter().any(|c| {
            c.lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .is_none()
        })
    });
    let mut warnings = Vec::new();
    if seconds > grace {
        warnings.push(format!(
            "terminationGracePeriodSeconds is {grace}, shorter than the sidecar's lame duck and \
             drain ({seconds}s: --lame-duck + --drain-timeout): the kubelet kills the pod before \
             connections finish; raise it or lower {PREFIX}lame-duck / {PREFIX}drain-timeout"
        ));
    }
    let app_sleep = (wanted && needs_sleep && seconds > 0).then_some(seconds);
    if app_sleep.is_some() && !template.prestop_sleep {
        warnings.push(format!(
            "the API server is older than 1.30 (no preStop sleep action): app containers without \
             a preStop get none, and may exit before the sidecar's {seconds}s lame duck and \
             drain end; give them a preStop, or set {APP_PRESTOP}: \"false\" to silence this"
        ));
    }
    Ok(StopPlan {
        app_sleep: app_sleep.filter(|_| template.prestop_sleep),
        warnings,
    })
}

fn to_value<T: serde::Serialize>(object: &T) -> Result<Value, Denial> {
    serde_json::to_value(object).map_err(|e| Denial(format!("cannot encode the sidecar: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(prestop_sleep: bool) -> SidecarTemplate {
        SidecarTemplate {
            prestop_sleep,
            ..crate::injector::default_config().template
        }
    }

    fn pod(annotations: Value, grace: Option<i64>, containers: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "p",
                "labels": {"wss-sidecar.io/inject": "true"},
                "annotations": annotations,
            },
            "spec": {"terminationGracePeriodSeconds": grace, "containers": containers},
        }))
        .unwrap()
    }

    fn patched(pod: &Pod, template: &SidecarTemplate) -> Value {
        let Ok(Outcome::Patched(patch)) = inject(pod, "apps", template) else {
            panic!("not patched");
        };
        let mut value = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut value, &patch).unwrap();
        value
    }

    const APP: &str = "registry.example/app:1";

    #[test]
    fn app_containers_sleep_through_lame_duck_and_drain() {
        let containers = json!([
            {"name": "a", "image": APP},
            {"name": "b", "image": APP, "lifecycle": {"postStart": {"sleep": {"seconds": 1}}}},
            {"name": "c", "image": APP, "lifecycle": {"preStop": {"exec": {"command": ["x"]}}}},
        ]);
        let annotations = json!({"wss-sidecar.io/lame-duck": "5s"});
        let out = patched(&pod(annotations, None, containers.clone()), &template(true));
        let c = &out["spec"]["containers"];
        // 5 s of lame duck + the injected 15 s drain.
        assert_eq!(
            c[0]["lifecycle"],
            json!({"preStop": {"sleep": {"seconds": 20}}})
        );
        assert_eq!(
            c[1]["lifecycle"]["preStop"],
            json!({"sleep": {"seconds": 20}})
        );
        assert_eq!(
            c[1]["lifecycle"]["postStart"],
            containers[1]["lifecycle"]["postStart"]
        );
        assert_eq!(c[2], containers[2], "an app's own preStop is kept");

        // Opted out, or a server without the sleep action: no sleep.
        let annotations = json!({"wss-sidecar.io/app-prestop": "false"});
        let out = patched(&pod(annotations, None, containers.clone()), &template(true));
        assert!(out["spec"]["containers"][0].get("lifecycle").is_none());
        let out = patched(&pod(json!({}), None, containers.clone()), &template(false));
        assert!(out["spec"]["containers"][0].get("lifecycle").is_none());

        let err = inject(
            &pod(json!({APP_PRESTOP: "no"}), None, containers),
            "apps",
            &template(true),
        )
        .unwrap_err();
        assert!(err.0.starts_with(APP_PRESTOP), "{err}");
    }

    #[test]
    fn the_injected_defaults_yield_to_annotations() {
        let containers = json!([{"name": "a", "image": APP}]);
        let args = |out: &Value| out["spec"]["initContainers"][0]["args"].clone();
        let out = patched(&pod(json!({}), None, containers.clone()), &template(true));
        let args_default = args(&out);
        for flag in [
            "--lame-duck=10s",
            "--drain-timeout=15s",
            "--redirect-port=443",
        ] {
            assert!(
                args_default.as_array().unwrap().contains(&json!(flag)),
                "{out}"
            );
        }
        let annotations = json!({"wss-sidecar.io/redirect-port": "8443"});
        let out = patched(&pod(annotations, None, containers), &template(true));
        let list = args(&out);
        assert!(
            list.as_array()
                .unwrap()
                .contains(&json!("--redirect-port=8443")),
            "{list}"
        );
        assert!(
            !list
                .as_array()
                .unwrap()
                .contains(&json!("--redirect-port=443")),
            "{list}"
        );
    }

    #[test]
    fn a_short_grace_period_or_an_old_server_is_a_warning() {
        let containers = json!([{"name": "a", "image": APP}]);
        // 10 s + 15 s fits the default 30 s.
        let fits = pod(json!({}), None, containers.clone());
        assert!(stop_warnings(&fits, &template(true)).is_empty());
        let short = pod(json!({}), Some(20), containers.clone());
        let warnings = stop_warnings(&short, &template(true));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("terminationGracePeriodSeconds is 20"),
            "{warnings:?}"
        );
        let long = pod(
            json!({"wss-sidecar.io/drain-timeout": "1m"}),
            None,
            containers.clone(),
        );
        assert!(stop_warnings(&long, &template(true))[0].contains("70s"));

        let old = stop_warnings(&fits, &template(false));
        assert!(old[0].contains("older than 1.30"), "{old:?}");
        let quiet = pod(json!({APP_PRESTOP: "false"}), None, containers);
        assert!(stop_warnings(&quiet, &template(false)).is_empty());
    }
}
