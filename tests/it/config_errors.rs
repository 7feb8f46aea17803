//! Bad configuration stops start-up with exit code 64 and a message naming the flag.

use clap::Parser;
use wss_sidecar::config::{Cli, Command};
use wss_sidecar::proxy;

use crate::support::*;

/// `wss-sidecar proxy ARGS…` with `env` must exit 64 with a message naming `flag`.
async fn assert_refused(args: &[&str], env: &[(&str, &str)], flag: &str) {
    let args = [&["proxy"], args].concat();
    let (code, stderr) = run_to_exit(&args, env).await;
    assert_eq!(
        code, 64,
        "{args:?} {env:?} should exit 64; stderr: {stderr}"
    );
    assert!(
        stderr.contains(flag),
        "{args:?}: the message should name {flag}: {stderr}"
    );
}

#[tokio::test]
async fn unknown_upstream_forms_are_refused() {
    for bad in [
        "nowhere",
        "ws://127.0.0.1:8080",
        "unix:",
        "127.0.0.1:0",
        "localhost:http",
    ] {
        assert_refused(&["--upstream", bad], &[], "--upstream").await;
    }
}

#[tokio::test]
async fn missing_certificate_files_are_refused() {
    assert_refused(&["--cert-dir", "/nonexistent/tls"], &[], "--cert-dir").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), "x").unwrap();
    let path = dir.path().to_str().unwrap();
    assert_refused(&["--cert-dir", path], &[], "--cert-dir").await;
}

#[tokio::test]
async fn unparsable_durations_are_refused() {
    for flag in [
        "--handshake-timeout",
        "--drain-timeout",
        "--idle-timeout",
        "--connect-timeout",
    ] {
        assert_refused(&[flag, "soon"], &[], flag).await;
    }
    assert_refused(&["--handshake-timeout", "0s"], &[], "--handshake-timeout").await;
}

#[tokio::test]
async fn environment_variables_are_checked_like_flags() {
    let env = [("WSS_SIDECAR_DRAIN_TIMEOUT", "later")];
    assert_refused(&[], &env, "--drain-timeout").await;
    let env = [("WSS_SIDECAR_UPSTREAM", "nowhere")];
    assert_refused(&[], &env, "--upstream").await;
}

#[tokio::test]
async fn other_bad_flags_are_refused() {
    assert_refused(&["--max-connections", "0"], &[], "--max-connections").await;
    assert_refused(&["--max-connections", "many"], &[], "--max-connections").await;
    assert_refused(&["--listen", "8443"], &[], "--listen").await;
    assert_refused(&["--log-format", "xml"], &[], "--log-format").await;
    assert_refused(&["--no-such-flag"], &[], "--no-such-flag").await;
}

#[tokio::test]
async fn an_address_in_use_is_refused() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let args = ["--listen", &addr, "--admin-listen", "off"];
    assert_refused(&args, &[], "--listen").await;
}

#[tokio::test]
async fn help_and_version_exit_zero() {
    let (code, _) = run_to_exit(&["--version"], &[]).await;
    assert_eq!(code, 0);
    let (code, _) = run_to_exit(&["proxy", "--help"], &[]).await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn bad_client_identity_flags_are_refused() {
    let empty = tempfile::tempdir().unwrap();
    let not_pem = empty.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let not_pem = not_pem.to_str().unwrap();
    for (args, env, flag) in [
        (&["--proxy-protocol", "v3"][..], &[][..], "--proxy-protocol"),
        (&["--client-ca", "/nonexistent/ca.pem"], &[], "--client-ca"),
        (&["--client-ca", not_pem], &[], "--client-ca"),
        (
            &["--client-ca", not_pem, "--client-auth", "sometimes"],
            &[],
            "--client-auth",
        ),
        (&["--allow-cn", "caller"], &[], "--allow-cn"),
        (&["--allow-san", "caller.test"], &[], "--allow-san"),
        (
            &["--forwarded-headers", "--trust-forwarded", "somewhere"],
            &[],
            "--trust-forwarded",
        ),
        (
            &[],
            &[("WSS_SIDECAR_TRUST_FORWARDED", "10.0.0.0/8")],
            "--trust-forwarded",
        ),
        (
            &["--forwarded-headers", "--max-request-head", "10"],
            &[],
            "--max-request-head",
        ),
        (
            &["--forwarded-headers", "--request-head-timeout", "0s"],
            &[],
            "--request-head-timeout",
        ),
    ] {
        assert_refused(args, env, flag).await;
    }
}

#[tokio::test]
async fn inbound_proxy_and_per_ip_flags_are_refused_when_incomplete_or_bad() {
    for (args, env, flag) in [
        // Either of the pair without the other.
        (
            &["--accept-proxy-protocol", "v2"][..],
            &[][..],
            "--trust-proxy-from",
        ),
        (
            &["--trust-proxy-from", "10.0.0.0/8"],
            &[],
            "--trust-proxy-from",
        ),
        (
            &[],
            &[("WSS_SIDECAR_ACCEPT_PROXY_PROTOCOL", "any")][..],
            "--trust-proxy-from",
        ),
        (
            &["--accept-proxy-protocol", "v3"],
            &[],
            "--accept-proxy-protocol",
        ),
        (
            &[
                "--accept-proxy-protocol",
                "v1",
                "--trust-proxy-from",
                "the-lb",
            ],
            &[],
            "--trust-proxy-from",
        ),
        (
            &["--max-connections-per-ip", "0"],
            &[],
            "--max-connections-per-ip",
        ),
        (
            &["--max-connections-per-ip", "many"],
            &[],
            "--max-connections-per-ip",
        ),
    ] {
        assert_refused(args, env, flag).await;
    }
}

#[tokio::test]
async fn the_injector_refuses_bad_configuration_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    // No cluster to manage a certificate through: no kubeconfig, no in-cluster variables.
    let no_cluster = &[("KUBECONFIG", "/nonexistent/kubeconfig")];
    let cases: [Case; 6] = [
        (&["injector"], &[], "--namespace"),
        (
            // Off the default ports, which another test may hold: the failure comes after
            // binding, when the self-managed certificate finds no cluster.
            &[
                "injector",
                "--namespace",
                "wss",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ],
            no_cluster,
            "--cert-dir",
        ),
        (
            &["injector", "--cert-dir", "/nonexistent/tls"],
            &[],
            "--cert-dir",
        ),
        (
            &["injector", "--cert-dir", dir, "--sidecar-mode", "sideways"],
            &[],
            "--sidecar-mode",
        ),
        (
            &["injector", "--cert-dir", dir],
            &[("WSS_SIDECAR_SIDECAR_MEMORY_LIMIT", "lots")],
            "--sidecar-memory-limit",
        ),
        // A default the proxy would refuse is refused before any pod gets it.
        (
            &[
                "injector",
                "--cert-dir",
                dir,
                "--sidecar-default",
                "idle-timeout=forever",
            ],
            &[],
            "--sidecar-default idle-timeout",
        ),
    ];
    for (args, env, flag) in cases {
        let (code, stderr) = run_to_exit(args, env).await;
        assert_eq!(code, 64, "{args:?} should exit 64; stderr: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?}: the message should name {flag}: {stderr}"
        );
    }
}

/// The flags that keep the binary off fixed ports, so only the case's own problem can fail it.
const LOCAL: [&str; 4] = ["--listen", "127.0.0.1:0", "--admin-listen", "off"];

#[tokio::test]
async fn an_acme_store_that_cannot_be_created_is_refused() {
    // The path passes the start-up check (it does not exist), but under a regular file no
    // directory can be made: found when the store is opened, still the user's to fix.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let store = file.join("store");
    let store = store.to_str().unwrap();
    let args = [
        &LOCAL[..],
        &["--acme-domain", "a.test", "--acme-store", store],
    ]
    .concat();
    assert_refused(&args, &[], "--acme-store").await;
}

/// The `--client-ca` bundle passes the start-up check, then is gone when `proxy::run` loads
/// it: that failure is the configuration error `main` exits 64 with, naming the flag. (In
/// process: the binary cannot be made to lose the file between the two reads without a race;
/// `main` exits with the code every `RunError` carries, as the `--acme-store` case above shows
/// end to end.)
#[tokio::test]
async fn a_client_ca_bundle_that_fails_when_the_proxy_loads_it_is_a_config_error() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, TestCa::new("Client CA").cert_pem()).unwrap();
    let argv = [
        "wss-sidecar",
        "proxy",
        "--client-ca",
        bundle.to_str().unwrap(),
    ];
    let Command::Proxy(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not a proxy command");
    };
    let config = args.into_config().expect("the bundle is good at start-up");
    std::fs::write(&bundle, "not a certificate").unwrap();
    let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listeners = proxy::Listeners {
        tls,
        admin: None,
        http: None,
    };
    let err = proxy::run(config, listeners, std::future::pending())
        .await
        .expect_err("the proxy refuses the changed bundle");
    assert!(matches!(err, proxy::RunError::ClientCa(_)), "{err}");
    assert_eq!(err.exit_code(), 64, "a configuration error: {err}");
    assert_eq!(err.flag(), Some("--client-ca"));
    assert!(err.to_string().starts_with("--client-ca: "), "{err}");
    assert!(err.to_string().contains("ca.pem"), "{err}");
    // Failures that are not the user's configuration stay runtime errors (exit 1).
    let tls_error = proxy::RunError::Tls(rustls::Error::General("x".into()));
    assert_eq!(tls_error.flag(), None);
    assert_eq!(tls_error.exit_code(), 1);
}

#[tokio::test]
async fn the_eab_key_file_is_checked_and_excludes_the_inline_key() {
    let dir = tempfile::tempdir().unwrap();
    let not_base64 = dir.path().join("hmac");
    std::fs::write(&not_base64, "not base64url!\n").unwrap();
    let not_base64 = not_base64.to_str().unwrap();
    let acme = ["--acme-domain", "a.test", "--acme-eab-kid", "kid"];
    for (file, why) in [
        ("/nonexistent/hmac", "cannot read"),
        (not_base64, "not base64url"),
    ] {
        let args = [&acme[..], &["--acme-eab-hmac-key-file", file]].concat();
        assert_refused(&args, &[], &format!("--acme-eab-hmac-key-file: {why}")).await;
        let env = [("WSS_SIDECAR_ACME_EAB_HMAC_KEY_FILE", file)];
        assert_refused(&acme, &env, &format!("--acme-eab-hmac-key-file: {why}")).await;
    }
    // Both ways of giving the key: refused, naming both flags, from flags or the environment.
    let both = [
        &acme[..],
        &["--acme-eab-hmac-key", "aGVsbG8"],
        &["--acme-eab-hmac-key-file", not_base64],
    ]
    .concat();
    assert_refused(&both, &[], "--acme-eab-hmac-key-file").await;
    assert_refused(&both, &[], "--acme-eab-hmac-key ").await;
    let env = [
        ("WSS_SIDECAR_ACME_EAB_HMAC_KEY", "aGVsbG8"),
        ("WSS_SIDECAR_ACME_EAB_HMAC_KEY_FILE", not_base64),
    ];
    assert_refused(&acme, &env, "--acme-eab-hmac-key-file").await;
    assert_refused(&acme, &env, "--acme-eab-hmac-key ").await;
}
