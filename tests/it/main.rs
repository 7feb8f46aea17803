//! The integration tests: one binary, one module per capability.

mod browser;
mod config_errors;
mod forwarding;
mod limits;
mod quickstart;
mod shutdown;
mod smoke;
mod support;
mod support_selftest;
mod upstream_down;
