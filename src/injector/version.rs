//! The API server's version decides how the sidecar joins a pod: native sidecars need 1.29+,
//! the app containers' `preStop: sleep` action 1.30+.
//!
//! An older server drops an init container's `restartPolicy` (the `SidecarContainers` feature
//! gate, beta and on by default since 1.29) and then refuses the pod (an init container may not
//! have probes), so every labelled pod would fail; it drops a `sleep` handler likewise
//! (`PodLifecycleSleepAction`, on by default since 1.30) and refuses a preStop left without a
//! handler. (Both gates have since gone GA and left pkg/features; the Kubernetes docs "Sidecar
//! Containers" and "Container Lifecycle Hooks" give the versions.)

use std::time::Duration;

use tracing::{info, warn};

use super::container::{SidecarMode, SidecarTemplate};

/// Native sidecars: 1.29+.
pub const NATIVE_SINCE: (u32, u32) = (1, 29);
/// The `preStop: sleep` action: 1.30+.
pub const SLEEP_SINCE: (u32, u32) = (1, 30);
/// `GET /version` (and finding the API) gets this long at start-up.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `--sidecar-mode`: the user's choice, or `auto` (by the server's version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RequestedMode {
    /// Native on 1.29+, plain on older servers (and native when the version cannot be read).
    Auto,
    /// Native, whatever the server says (a warning on an older one).
    Native,
    /// Plain containers.
    Plain,
}

/// What the injector injects on a server of `version` (`None`: unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Native or plain.
    pub mode: SidecarMode,
    /// App containers may get a `preStop: sleep`.
    pub prestop_sleep: bool,
    /// Why, for the log; a warning when the choice may not run.
    pub why: String,
    /// Whether `why` is a warning.
    pub warn: bool,
}

/// Major and minor from `/version`'s strings: managed clusters report a minor such as `29+`.
pub fn parse(major: &str, minor: &str) -> Option<(u32, u32)> {
    let number = |s: &str| {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((number(major)?, number(minor)?))
}

/// The mode and preStop for `requested` on a server of `version`.
pub fn decide(requested: RequestedMode, version: Option<(u32, u32)>) -> Decision {
    let shown = version.map_or("unknown".to_string(), |(a, b)| format!("{a}.{b}"));
    let native_ok = version.is_none_or(|v| v >= NATIVE_SINCE);
    let prestop_sleep = version.is_none_or(|v| v >= SLEEP_SINCE);
    let (mode, why, warn) = match (requested, native_ok) {
        (RequestedMode::Plain, _) => (SidecarMode::Plain, "--sidecar-mode=plain".into(), false),
        (RequestedMode::Native, true) => {
            (SidecarMode::Native, "--sidecar-mode=native".into(), false)
        }
        (RequestedMode::Native, false) => (
            SidecarMode::Native,
            format!(
                "--sidecar-mode=native on a {shown} server: native sidecars need 1.29+, so the \
                 API server may refuse every injected pod (use auto or plain)"
            ),
            true,
        ),
        (RequestedMode::Auto, true) if version.is_none() => (
            SidecarMode::Native,
            "cannot read the server version: native sidecars (set --sidecar-mode=plain on \
             clusters older than 1.29)"
                .into(),
            true,
        ),
        (RequestedMode::Auto, true) => (
            SidecarMode::Native,
            format!("server {shown}: native sidecars"),
            false,
        ),
        (RequestedMode::Auto, false) => (
            SidecarMode::Plain,
            format!("server {shown} is older than 1.29: plain containers"),
            false,
        ),
    };
    Decision {
        mode,
        prestop_sleep,
        why,
        warn,
    }
}

/// The server's version through `client`, bounded by [`TIMEOUT`].
pub async fn server_version(client: &kube::Client) -> Result<(u32, u32), String> {
    match tokio::time::timeout(TIMEOUT, client.apiserver_version()).await {
        Err(_) => Err(format!("GET /version: no answer within {TIMEOUT:?}")),
        Ok(Err(err)) => Err(format!("GET /version: {err}")),
        Ok(Ok(info)) => parse(&info.major, &info.minor).ok_or_else(|| {
            format!(
                "GET /version: unreadable version {:?}.{:?}",
                info.major, info.minor
            )
        }),
    }
}

/// Reads the server's version (when there is an API to ask) and sets `template`'s mode and
/// preStop from it and `requested`; logs the outcome.
pub async fn adapt(template: &mut SidecarTemplate, requested: RequestedMode) {
    let version = match tokio::time::timeout(TIMEOUT, crate::k8s::client::connect()).await {
        Ok(Ok(client)) => server_version(&client).await,
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no Kubernetes API within {TIMEOUT:?}")),
    };
    let version = version
        .inspect_err(|err| warn!(error = %err, "cannot read the API server's version"))
        .ok();
    let decision = decide(requested, version);
    template.mode = decision.mode;
    template.prestop_sleep = decision.prestop_sleep;
    let mode = match decision.mode {
        SidecarMode::Native => "native",
        SidecarMode::Plain => "plain",
    };
    if decision.warn {
        warn!(
            mode,
            prestop_sleep = decision.prestop_sleep,
            "sidecar mode: {}",
            decision.why
        );
    } else {
        info!(
            mode,
            prestop_sleep = decision.prestop_sleep,
            "sidecar mode: {}",
            decision.why
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_managed_clusters_report_them() {
        assert_eq!(parse("1", "37"), Some((1, 37)));
        assert_eq!(parse("1", "28+"), Some((1, 28)));
        assert_eq!(parse("", ""), None);
    }

    #[test]
    fn the_server_decides_unless_the_user_did() {
        use RequestedMode::{Auto, Native, Plain};
        let d = decide(Auto, Some((1, 37)));
        assert_eq!(
            (d.mode, d.prestop_sleep, d.warn),
            (SidecarMode::Native, true, false)
        );
        let d = decide(Auto, Some((1, 29)));
        assert_eq!((d.mode, d.prestop_sleep), (SidecarMode::Native, false));
        let d = decide(Auto, Some((1, 28)));
        assert_eq!((d.mode, d.prestop_sleep), (SidecarMode::Plain, false));
        let d = decide(Auto, None);
        assert_eq!(
            (d.mode, d.prestop_sleep, d.warn),
            (SidecarMode::Native, true, true)
        );
        let d = decide(Native, Some((1, 28)));
        assert_eq!((d.mode, d.warn), (SidecarMode::Native, true));
        assert!(d.why.contains("1.28"), "{}", d.why);
        let d = decide(Plain, Some((1, 37)));
        assert_eq!(
            (d.mode, d.prestop_sleep, d.warn),
            (SidecarMode::Plain, true, false)
        );
    }
}
