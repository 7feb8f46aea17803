//! The integration tests: one binary, one module per capability.

mod config_errors;
mod quickstart;
mod shutdown;
mod smoke;
mod support;
mod support_selftest;
