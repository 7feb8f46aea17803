//! The integration tests: one binary, one module per capability.

mod smoke;
mod support;
mod support_selftest;
