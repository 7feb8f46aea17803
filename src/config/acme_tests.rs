//! The `--acme-*` flags: defaults, errors naming the flag, the external account binding key.

use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    acme: AcmeArgs,
}

fn parse(args: &[&str]) -> Result<Option<AcmeConfig>, ConfigError> {
    let argv = std::iter::once("x").chain(args.iter().copied());
    Cmd::try_parse_from(argv).unwrap().acme.into_config()
}

#[test]
fn off_without_domains_and_defaults_with_one() {
    assert!(parse(&[]).unwrap().is_none());
    let cfg = parse(&["--acme-domain", "A.example.com"]).unwrap().unwrap();
    assert_eq!(cfg.domains, ["a.example.com"]);
    assert_eq!(cfg.directory, LETSENCRYPT);
    assert_eq!(
        cfg.store,
        StoreLocation::Dir(PathBuf::from("/var/lib/wss-sidecar"))
    );
    assert_eq!(cfg.lease_duration, Duration::from_secs(30));
    assert_eq!(cfg.challenge, ChallengeKind::TlsAlpn01);
    let cfg = parse(&["--acme-domain", "a.test", "--http-listen", "127.0.0.1:80"]);
    assert_eq!(cfg.unwrap().unwrap().challenge, ChallengeKind::Http01);
    let cfg = parse(&[
        "--acme-domain",
        "a.test",
        "--acme-directory",
        "letsencrypt-staging",
    ]);
    assert_eq!(cfg.unwrap().unwrap().directory, LETSENCRYPT_STAGING);
}

#[test]
fn a_secret_store_with_and_without_a_namespace() {
    let store = |value: &str| {
        parse(&["--acme-domain", "a.test", "--acme-store", value])
            .unwrap()
            .unwrap()
            .store
    };
    let StoreLocation::Secret(plain) = store("secret:web-acme") else {
        panic!("not a secret store");
    };
    assert_eq!((plain.namespace, plain.name.as_str()), (None, "web-acme"));
    let StoreLocation::Secret(full) = store("secret:team/web-acme") else {
        panic!("not a secret store");
    };
    assert_eq!(full.namespace.as_deref(), Some("team"));
    assert_eq!(
        store("/tmp/acme"),
        StoreLocation::Dir(PathBuf::from("/tmp/acme"))
    );
}

#[test]
fn errors_name_the_flag() {
    for (args, flag) in [
        (&["--acme-domain", "bad name"][..], "--acme-domain"),
        (
            &["--acme-domain", "a.test", "--acme-directory", "ftp"],
            "--acme-directory",
        ),
        (
            &["--acme-domain", "a.test", "--acme-store", "secret:Ns/x"],
            "--acme-store",
        ),
        (
            &["--acme-domain", "a.test", "--acme-store", "secret:"],
            "--acme-store",
        ),
        (
            &["--acme-domain", "a.test", "--acme-lease-duration", "0s"],
            "--acme-lease-duration",
        ),
        (
            &["--acme-domain", "a.test", "--acme-challenge", "http-01"],
            "--acme-challenge",
        ),
        (
            &["--acme-domain", "a.test", "--acme-self-check-timeout", "0s"],
            "--acme-self-check-timeout",
        ),
        (
            &["--acme-domain", "a.test", "--acme-eab-kid", "k"],
            "--acme-eab-hmac-key",
        ),
        (
            &[
                "--acme-domain",
                "a.test",
                "--acme-eab-kid",
                "k",
                "--acme-eab-hmac-key",
                "!",
            ],
            "--acme-eab-hmac-key",
        ),
        (
            &["--acme-domain", "a.test", "--acme-ca-root", "/nonexistent"],
            "--acme-ca-root",
        ),
        (
            &["--acme-domain", "a.test", "--acme-store", "/dev/null"],
            "--acme-store",
        ),
    ] {
        assert_eq!(parse(args).unwrap_err().flag, flag, "{args:?}");
    }
}

#[test]
fn eab_key_is_decoded() {
    let cfg = parse(&[
        "--acme-domain",
        "a.test",
        "--acme-eab-kid",
        "kid",
        "--acme-eab-hmac-key",
        "aGVsbG8",
    ]);
    assert_eq!(
        cfg.unwrap().unwrap().eab,
        Some(("kid".into(), b"hello".to_vec()))
    );
}

#[test]
fn eab_key_file_is_read_trimmed_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hmac");
    std::fs::write(&file, "  aGVsbG8\n").unwrap();
    let file = file.to_str().unwrap();
    let with_file = |path: &str| {
        parse(&[
            "--acme-domain",
            "a.test",
            "--acme-eab-kid",
            "kid",
            "--acme-eab-hmac-key-file",
            path,
        ])
    };
    let eab = with_file(file).unwrap().unwrap().eab;
    assert_eq!(eab, Some(("kid".into(), b"hello".to_vec())));
    let missing = dir.path().join("missing");
    let err = with_file(missing.to_str().unwrap()).unwrap_err();
    assert_eq!(err.flag, "--acme-eab-hmac-key-file");
    for bad in ["not base64url!", " \n"] {
        std::fs::write(dir.path().join("hmac"), bad).unwrap();
        assert_eq!(
            with_file(file).unwrap_err().flag,
            "--acme-eab-hmac-key-file"
        );
    }
    let err = parse(&["--acme-domain", "a.test", "--acme-eab-hmac-key-file", file]);
    assert!(
        err.unwrap_err()
            .message
            .contains("--acme-eab-hmac-key-file")
    );
}

#[test]
fn eab_key_and_key_file_exclude_each_other() {
    let argv = [
        "x",
        "--acme-eab-hmac-key",
        "aGVsbG8",
        "--acme-eab-hmac-key-file",
        "/k",
    ];
    let err = Cmd::try_parse_from(argv).err().unwrap().to_string();
    assert!(err.contains("--acme-eab-hmac-key ") && err.contains("--acme-eab-hmac-key-file"));
    let err = eab(None, Some("a".into()), Some("/k".into())).unwrap_err();
    assert!(
        err.to_string().contains("--acme-eab-hmac-key-file"),
        "{err}"
    );
}

#[test]
fn the_self_check_is_on_by_default_and_can_be_pointed_or_skipped() {
    let cfg = parse(&["--acme-domain", "a.test"]).unwrap().unwrap();
    assert_eq!(
        cfg.self_check,
        SelfCheckConfig {
            skip: false,
            timeout: Duration::from_secs(300),
            resolver: None,
            tls_port: 443,
            http_port: 80,
        }
    );
    let cfg = parse(&[
        "--acme-domain",
        "a.test",
        "--acme-skip-self-check",
        "--acme-resolver",
        "10.244.0.1:5353",
        "--acme-self-check-timeout",
        "30s",
    ])
    .unwrap()
    .unwrap();
    assert!(cfg.self_check.skip);
    assert_eq!(
        cfg.self_check.resolver,
        Some("10.244.0.1:5353".parse().unwrap())
    );
    assert_eq!(cfg.self_check.timeout, Duration::from_secs(30));
}

#[test]
fn a_secret_store_name_leaves_room_for_its_account_secret() {
    // 245 characters (four labels of 60, then the last), and one more.
    let labels = format!("{0}.{0}.{0}.{0}.", "a".repeat(60));
    let longest = format!("secret:{labels}a");
    assert!(parse(&["--acme-domain", "a.test", "--acme-store", &longest]).is_ok());
    let too_long = format!("secret:{labels}aa");
    let err = parse(&["--acme-domain", "a.test", "--acme-store", &too_long]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("--acme-store"), "{text}");
    assert!(text.contains("the account Secret"), "{text}");
}
