//! The integration tests: one binary, one module per capability.

mod acme;
mod acme_renewal;
mod acme_replicas;
mod browser;
mod cert_reload;
mod config_errors;
mod forwarded_headers;
mod forwarding;
mod limits;
mod metrics;
mod mtls;
mod proxy_protocol;
mod quickstart;
mod shutdown;
mod smoke;
mod sni;
mod support;
mod support_selftest;
mod upstream_down;
