//! Certificate directories (kubelet-style and plain), `wait_until` and crypto provider set-up.

use std::time::Duration;

use crate::support::kubelet::utc_stamp;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn kubelet_publish_swaps_data_and_removes_the_old_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kubelet = KubeletDir::new(dir.path());
    let ca = TestCa::new("selftest ca");
    let first = ca.issue(LeafSpec::new(&["first.test"]));
    let second = ca.issue(LeafSpec::new(&["second.test"]));

    kubelet.publish_pair(&first);
    let first_dir = kubelet.current_data_dir().expect("..data exists");
    kubelet.publish_pair(&second);
    let second_dir = kubelet.current_data_dir().expect("..data exists");

    assert_ne!(
        first_dir, second_dir,
        "each publish gets its own dir, even within a second"
    );
    assert!(!first_dir.exists(), "old timestamped dir removed");
    let target = std::fs::read_link(dir.path().join("..data")).expect("..data is a symlink");
    assert!(
        target.is_relative(),
        "..data points by relative name: {target:?}"
    );
    let name = target.to_str().expect("utf-8 name");
    assert!(is_timestamped_name(name), "{name}");
    assert!(!dir.path().join("..data_tmp").exists());
    for (file, contents) in [("tls.crt", &second.cert_pem), ("tls.key", &second.key_pem)] {
        let link = std::fs::read_link(dir.path().join(file)).expect("visible file is a symlink");
        assert_eq!(link, std::path::Path::new("..data").join(file));
        assert_eq!(
            &std::fs::read_to_string(dir.path().join(file)).expect("read"),
            contents
        );
    }

    // A key dropped from the Secret disappears; nested keys get one top-level symlink.
    kubelet.publish(&[("tls.crt", b"x"), ("extra/ca.crt", b"y")]);
    assert!(std::fs::symlink_metadata(dir.path().join("tls.key")).is_err());
    assert_eq!(
        std::fs::read(dir.path().join("extra/ca.crt")).expect("nested"),
        b"y"
    );
    let entries = std::fs::read_dir(dir.path()).expect("list").count();
    assert_eq!(entries, 4, "..data, one timestamped dir, tls.crt, extra");
}

/// `..YYYY_MM_DD_HH_MM_SS.NNNNNNNNN`
fn is_timestamped_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let shape = rest
        .bytes()
        .map(|b| if b.is_ascii_digit() { b'9' } else { b })
        .collect::<Vec<_>>();
    shape == b"9999_99_99_99_99_99.999999999"
}

#[test]
fn utc_stamps_match_go_layout() {
    assert_eq!(utc_stamp(0), "1970_01_01_00_00_00");
    assert_eq!(utc_stamp(951_782_400), "2000_02_29_00_00_00");
    assert_eq!(utc_stamp(1_700_000_000), "2023_11_14_22_13_20");
    assert_eq!(utc_stamp(4_107_542_399), "2100_02_28_23_59_59");
}

#[test]
fn plain_pair_is_regular_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = TestCa::new("selftest ca").issue(LeafSpec::new(&["plain.test"]));
    write_plain_pair(dir.path(), &pair);
    let meta = std::fs::symlink_metadata(dir.path().join("tls.crt")).expect("tls.crt");
    assert!(meta.file_type().is_file());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tls.key")).expect("key"),
        pair.key_pem
    );
}

#[tokio::test]
async fn wait_until_returns_once_the_condition_holds() {
    let start = tokio::time::Instant::now();
    wait_until("three polls pass", WAIT, || async {
        start.elapsed() >= Duration::from_millis(50)
    })
    .await;
}

#[tokio::test]
#[should_panic(expected = "waiting until the impossible happens")]
async fn wait_until_panics_naming_what() {
    wait_until(
        "the impossible happens",
        Duration::from_millis(60),
        || async { false },
    )
    .await;
}

/// The provider installed is aws-lc-rs, as `main` installs it, and a second call keeps the
/// first instead of failing or replacing it.
#[test]
fn install_crypto_provider_installs_aws_lc_rs_once() {
    use rustls::crypto::CryptoProvider;
    install_crypto_provider();
    let installed = CryptoProvider::get_default().expect("a provider is installed");
    let aws_lc = rustls::crypto::aws_lc_rs::default_provider();
    let suites =
        |p: &CryptoProvider| -> Vec<_> { p.cipher_suites.iter().map(|s| s.suite()).collect() };
    let groups = |p: &CryptoProvider| -> Vec<_> { p.kx_groups.iter().map(|g| g.name()).collect() };
    assert_eq!(
        suites(installed),
        suites(&aws_lc),
        "aws-lc-rs's cipher suites"
    );
    assert_eq!(
        groups(installed),
        groups(&aws_lc),
        "aws-lc-rs's key exchange groups"
    );
    install_crypto_provider();
    let again = CryptoProvider::get_default().expect("still installed");
    assert!(
        std::sync::Arc::ptr_eq(installed, again),
        "the first one stays"
    );
}
