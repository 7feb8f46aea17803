//! The integration tests: one binary, one module per capability.

mod browser;
mod cert_reload;
mod chart;
mod config_errors;
mod forwarding;
mod injector_examples;
mod injector_golden;
mod injector_selfcert;
mod injector_webhook;
mod limits;
mod metrics;
mod quickstart;
mod shutdown;
mod smoke;
mod sni;
mod static_binary;
mod support;
mod support_selftest;
mod upstream_down;
