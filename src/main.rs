//! The `wss-sidecar` binary: parse the command line, set up logging, run.
#![forbid(unsafe_code)]
fn main() {}
