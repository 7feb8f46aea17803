//! The Helm chart, checked offline by Helm's own engine: strict lint and render with the
//! default values and every file in `helm/wss-sidecar/ci/`, every object validated against the
//! Kubernetes schemas, and `manifests/` equal to the default render (`scripts/check-chart`).

use std::path::Path;
use std::process::Command;

#[test]
fn chart_lints_renders_validates_and_matches_manifests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/test-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-python-deps (scripts/test does) to install the \
         pinned helm-python-sdk and kubernetes-validate",
        python.display()
    );
    let output = Command::new(&python)
        .arg(root.join("scripts/check-chart"))
        .current_dir(root)
        .output()
        .expect("scripts/check-chart runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scripts/check-chart failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
