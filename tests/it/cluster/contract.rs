//! `scripts/cluster` without a usable Go: a missing or too old `go` stops `up` with a message
//! saying how to install it, before anything is built, cleaned up or started.

use std::path::Path;
use std::process::Command;

/// Runs `scripts/cluster up` on a fresh directory with `path` as PATH; (success, stderr).
fn up_with_path(path: &str) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(root.join("scripts/cluster"))
        .args(["up", dir.path().to_str().expect("utf-8 path")])
        .env("PATH", path)
        .output()
        .expect("scripts/cluster runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn up_without_go_says_how_to_install_it() {
    let (ok, stderr) = up_with_path("/usr/bin:/bin");
    assert!(!ok, "up succeeded without go");
    assert!(
        stderr.contains("go is not installed") && stderr.contains("https://go.dev/dl/"),
        "{stderr}"
    );
}

#[test]
fn up_with_an_old_go_says_how_to_install_a_new_one() {
    let bin = tempfile::tempdir().expect("temp dir");
    let go = bin.path().join("go");
    std::fs::write(&go, "#!/bin/sh\necho go1.22.5\n").expect("write fake go");
    let mut permissions = std::fs::metadata(&go).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&go, permissions).expect("chmod");
    let (ok, stderr) = up_with_path(&format!("{}:/usr/bin:/bin", bin.path().display()));
    assert!(!ok, "up succeeded with go 1.22");
    assert!(
        stderr.contains("go 1.22.5 is too old") && stderr.contains("https://go.dev/dl/"),
        "{stderr}"
    );
}
