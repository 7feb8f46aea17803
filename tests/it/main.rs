//! The integration tests: one binary, one module per capability.

mod acme;
mod acme_renewal;
mod acme_replicas;
mod browser;
mod cert_reload;
mod chart;
mod config_errors;
mod forwarded_headers;
mod forwarding;
mod injector_examples;
mod injector_golden;
mod injector_selfcert;
mod injector_webhook;
mod k8s_client;
mod limits;
mod metrics;
mod mtls;
mod proxy_protocol;
mod quickstart;
mod shutdown;
mod smoke;
mod sni;
mod static_binary;
mod support;
mod support_selftest;
mod upstream_down;
