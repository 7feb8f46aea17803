//! Tests of `skew`: the recorded flag lists, version parsing, and what an older release gets.

use super::*;

fn flags() -> &'static ProxyFlags {
    crate::config::proxy_flags()
}

/// This build's recorded list: the file its own version names.
fn own_list_path() -> String {
    format!(
        "{}/src/injector/releases/{}.flags",
        env!("CARGO_MANIFEST_DIR"),
        env!("CARGO_PKG_VERSION")
    )
}

const OWN_HEADER: &str = "\
# The long flags of `wss-sidecar proxy` at this release, one per line (without `--`), from its
# clap definition. Regenerate: UPDATE_FLAGS=1 cargo nextest run -E 'test(/recorded_flags/)'
";

/// The list of this release is the clap definition's; `UPDATE_FLAGS=1` rewrites it. A
/// new version needs its file and a line in `RECORDED` (the test names both).
#[test]
fn recorded_flags_of_this_release_match_the_clap_definition() {
    let live: Vec<&str> = flags().names().collect();
    let text = format!("{OWN_HEADER}{}\n", live.join("\n"));
    let path = own_list_path();
    if std::env::var_os("UPDATE_FLAGS").is_some() {
        std::fs::write(&path, &text).expect("write the flag list");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        on_disk, text,
        "{path} is stale or missing: run UPDATE_FLAGS=1 cargo nextest run -E \
         'test(/recorded_flags/)'"
    );
    let last = RECORDED.last().map(|(v, list)| (*v, parse_flags(list)));
    assert_eq!(
        last,
        Some((Version::own(), live.iter().copied().collect())),
        "RECORDED must end with this release ({}), include_str!(\"releases/{}.flags\") (the list is \
         compiled in: after UPDATE_FLAGS=1, run the test again)",
        Version::own(),
        Version::own()
    );
}

#[test]
fn recorded_releases_are_in_order_and_no_old_flag_is_gone() {
    assert!(RECORDED.windows(2).all(|w| w[0].0 < w[1].0));
    let old = parse_flags(RECORDED[0].1);
    assert_eq!(old.len(), 37, "0.1.0's proxy had 37 long flags");
    // Every 0.1.0 flag is still a flag (none was renamed: the command-line contract).
    for flag in &old {
        assert!(flags().has(flag), "--{flag} of 0.1.0 is gone");
    }
    assert!(!old.contains("lame-duck") && !old.contains("redirect-port"));
}

#[test]
fn versions_parse_as_semver_tags() {
    assert_eq!(Version::parse("0.1.0"), Some(Version(0, 1, 0)));
    assert_eq!(Version::parse("v1.22.3"), Some(Version(1, 22, 3)));
    assert_eq!(Version::parse("0.2.0-rc.1+b7"), Some(Version(0, 2, 0)));
    for bad in ["latest", "0.1", "0.1.0.0", "1.x.0", "", "v", "0.-1.0"] {
        assert_eq!(Version::parse(bad), None, "{bad}");
    }
    assert_eq!(Version::own().to_string(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn the_tag_is_found_past_registry_ports_and_digests() {
    assert_eq!(
        image_tag("ghcr.io/wss-sidecar/wss-sidecar:0.1.0"),
        Some("0.1.0")
    );
    assert_eq!(image_tag("registry:5000/wss-sidecar"), None);
    assert_eq!(
        image_tag("registry:5000/a/wss-sidecar:v0.1.0@sha256:ab"),
        Some("v0.1.0")
    );
    assert_eq!(image_tag("wss-sidecar@sha256:ab"), None);
}

#[test]
fn the_version_comes_from_the_flag_then_the_tag_then_the_injector() {
    let r = SidecarRelease::resolve("x/wss-sidecar:0.1.0", None).unwrap();
    assert_eq!((r.version(), r.assumed()), (Version(0, 1, 0), None));
    assert!(!r.has("lame-duck") && r.has("listen"));
    assert_eq!(r.startup_path(), "/healthz");
    assert!(!r.lame_duck_hook());

    let r = SidecarRelease::resolve("x/wss-sidecar@sha256:ab", Some("0.1.0")).unwrap();
    assert_eq!(r.version(), Version(0, 1, 0));

    let r = SidecarRelease::resolve("x/wss-sidecar:latest", None).unwrap();
    assert_eq!(r.version(), Version::own());
    assert!(r.assumed().unwrap().contains("--sidecar-version"), "{r:?}");
    assert!(r.has("lame-duck") && r.lame_duck_hook());
    assert_eq!(r.startup_path(), "/startupz");
    assert_eq!(r.warning(), None);

    // Between releases: the last recorded one's flags. Newer: everything we know.
    let r = SidecarRelease::resolve("x:0.1.7", None).unwrap();
    assert!(!r.has("lame-duck"));
    assert!(r.changes[0].contains("0.1.7 (as 0.1.0)"), "{r:?}");
    let r = SidecarRelease::resolve("x:9.0.0", None).unwrap();
    assert!(r.has("lame-duck") && r.warning().is_none());

    let err = SidecarRelease::resolve("x:1.0.0", Some("soon")).unwrap_err();
    assert_eq!(err.flag, "--sidecar-version");
    assert!(err.message.contains("\"soon\""), "{err}");
    let err = SidecarRelease::resolve("x:0.0.9", None).unwrap_err();
    assert_eq!(err.flag, "--sidecar-image");
    assert!(err.message.contains("0.0.9"), "{err}");
}

#[test]
fn injected_defaults_are_left_out_and_asked_ones_refused() {
    let injected = [("drain-timeout", "15s"), ("lame-duck", "10s")];
    let mut r = SidecarRelease::resolve("x:0.1.0", None).unwrap();
    let got = r
        .defaults(&injected, vec![("log-format".into(), "json".into())])
        .unwrap();
    assert_eq!(
        got,
        [
            ("drain-timeout".to_string(), "15s".to_string()),
            ("log-format".into(), "json".into())
        ]
    );
    let warning = r.warning().unwrap();
    assert!(warning.contains("left out --lame-duck=10s"), "{warning}");
    assert!(warning.contains("/healthz"), "{warning}");

    let err = r
        .defaults(&injected, vec![("redirect-port".into(), "443".into())])
        .unwrap_err();
    assert_eq!(err.flag, "--sidecar-default");
    assert!(err.message.starts_with("redirect-port: "), "{err}");
    assert!(err.message.contains("0.1.0"), "{err}");

    let mut own = SidecarRelease::own();
    assert_eq!(own.defaults(&injected, Vec::new()).unwrap().len(), 2);
    assert_eq!(own.warning(), None);
}

#[test]
fn annotations_of_newer_flags_are_refused_by_name() {
    let r = SidecarRelease::resolve("x:0.1.0", None).unwrap();
    let pod: BTreeMap<String, String> = [
        ("wss-sidecar.io/redirect-port", "8443"),
        ("wss-sidecar.io/listen", "[::]:9443"),
        ("wss-sidecar.io/mounts", "x"),
        ("example.com/lame-duck", "1s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let err = r.check_annotations(&pod, flags()).unwrap_err().0;
    assert!(err.starts_with("wss-sidecar.io/redirect-port: "), "{err}");
    assert!(err.contains("wss-sidecar 0.1.0"), "{err}");
    assert!(!err.contains("listen") && !err.contains("mounts"), "{err}");
    assert!(
        SidecarRelease::own()
            .check_annotations(&pod, flags())
            .is_ok()
    );
}
