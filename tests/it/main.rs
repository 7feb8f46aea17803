//! The integration tests: one binary, one module per capability.

mod support;
mod support_selftest;
