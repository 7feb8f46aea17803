//! The container image's build script: `scripts/build-static` makes a binary that runs in an
//! empty root holding only itself, CA certificates and (as every pod has) `/etc/hosts`.
//!
//! Cost: a second compile of the whole tree with `+crt-static` in its own target dir (about
//! 2-3 minutes on 2 cores when cold, seconds when warm); `--profile dev` without debug info
//! keeps it well below a release build.

use std::path::Path;
use std::process::{Command, Output};

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `chroot ROOT ARGS…` as root (CI and this machine), else a user namespace that maps us to
/// root so that `unshare --root` may change the root.
fn in_root(root: &Path, args: &[&str]) -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut command = if is_root {
        let mut c = Command::new("chroot");
        c.arg(root);
        c
    } else {
        let mut c = Command::new("unshare");
        c.args(["--map-root-user", "--root"]).arg(root);
        c
    };
    // Nothing of the test environment leaks in; PATH only finds chroot/unshare outside.
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    command
}

#[test]
fn the_static_build_runs_in_an_empty_root() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = tempfile::tempdir().unwrap();
    let binary = root.path().join("wss-sidecar");
    run(Command::new(repo.join("scripts/build-static"))
        .args(["--profile", "dev", "--out"])
        .arg(&binary)
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .current_dir(repo));
    let certs = root.path().join("etc/ssl/certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        certs.join("ca-certificates.crt"),
    )
    .expect("the host's CA bundle (Debian: ca-certificates) is copied in");
    let entries: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
    assert_eq!(entries.len(), 2, "the root holds only the binary and etc/");

    let output = run(&mut in_root(root.path(), &["/wss-sidecar", "--version"]));
    let version = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        version.trim(),
        concat!("wss-sidecar ", env!("CARGO_PKG_VERSION"))
    );

    // A statically linked glibc cannot load NSS modules; with the /etc/hosts every pod gets,
    // `localhost` still resolves (a bad flag value would exit 64 before anything is bound).
    std::fs::write(root.path().join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let output = in_root(
        root.path(),
        &[
            "/wss-sidecar",
            "proxy",
            "--upstream",
            "localhost:8080",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--max-connections",
            "0",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("--max-connections"),
        "got past --upstream localhost: {stderr}"
    );
}
