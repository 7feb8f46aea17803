//! What `wss-sidecar injector` is told to do, checked: where its serving certificate comes
//! from and the sidecar it injects. [`crate::config`] builds it from the flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::container::SidecarTemplate;

/// Everything the injector needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTPS listen address (the caller binds it; logged as given when unbound).
    pub listen: SocketAddr,
    /// On shutdown, how long to stay not ready while still serving admissions (`--lame-duck`).
    pub lame_duck: std::time::Duration,
    /// Where the serving certificate comes from.
    pub serving_cert: ServingCert,
    /// The sidecar to inject; its mode and preStop are set from the server's version at start
    /// (`super::version`).
    pub template: SidecarTemplate,
    /// `--sidecar-mode` as given.
    pub sidecar_mode: super::version::RequestedMode,
}

/// Where the webhook's serving certificate comes from.
#[derive(Debug, Clone)]
pub enum ServingCert {
    /// A directory holding `tls.crt` and `tls.key` (`--cert-dir`), reloaded when it changes.
    Dir(PathBuf),
    /// Made and kept by the injector itself, through the Kubernetes API.
    SelfManaged(SelfManaged),
}

/// The objects of the self-managed certificate.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    /// The injector's namespace (its Service, Secret and Lease).
    pub namespace: String,
    /// This replica's name in the Lease; the host name when `None`.
    pub pod_name: Option<String>,
    /// The Service whose DNS names the certificate is for.
    pub service_name: String,
    /// The MutatingWebhookConfiguration whose `caBundle` is kept.
    pub webhook_name: String,
    /// The Secret holding the CA and the certificate.
    pub secret: String,
    /// The Lease deciding which replica writes.
    pub lease: String,
}
