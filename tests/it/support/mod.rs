//! Shared integration-test helpers: certificates, kubelet-style cert dirs, clients, upstreams.
//!
//! # Layout
//! - `certs`: a private CA issuing leaf pairs in every key type and PEM key format.
//! - `key_formats`: PKCS#8 to PKCS#1 / SEC1 re-encoding behind `certs`.
//! - `kubelet`: certificate directories updated the way kubelet updates a mounted Secret.
//! - `client`: TLS and WebSocket clients that report which certificate the server presented.
//! - `identity`: clients presenting certificates (mTLS), reading what an upstream received.
//! - `echo`: upstream apps (WebSocket echo over TCP or a unix socket, raw TCP listener).
//! - `child`: child processes whose output is kept and shown when the test fails.
//! - `chromium`, `devtools`: headless Chromium and the DevTools protocol client that drives
//!   its page, for the browser tests.
//! - `process`: the real binary as a child process (the proxy, or the demo), its logs and
//!   exit status.
//! - `pebble`: the Pebble ACME server and its DNS (pebble-challtestsrv) as child processes.
//! - `acme`: what the ACME tests share: the names (one `NAMES`), the `--acme-*` flags,
//!   waiting for issuance and renewal, and replicas sharing a store Secret.
//! - `fake_api`: an in-process Kubernetes API server (real JSON, resourceVersion checks,
//!   lists and watches, injected faults, held requests, closed watches and 410 Gone, RBAC);
//!   `fake_api_objects` serves requests against its objects, `fake_api_watch` its watches.
//! - `rbac`: a Role's rules applied as the API server's authorizer would, for `fake_api`, and
//!   the example Role of `manifests/examples/`.
//! - `injector`: the injector's sidecar template and AdmissionReview requests.
//! - `cluster`: the one-node cluster of `scripts/cluster` (real apiserver, kubectl, helm),
//!   driven as a user would; `recorder`: an HTTP server on its bridge that containers call to
//!   say what happened when.
//! - `proxy`: the proxy run in-process on free ports, and its admin endpoint and metrics.
//! - `served`: that proxy serving `app.test` from a fresh CA, with a client that trusts it.
//! - here: [`wait_until`], the suite's replacement for sleeps, and crypto provider set-up.

// Shared helpers: not every test module uses every one, and unused items in a test binary warn.
#![allow(dead_code)]

pub mod acme;
pub mod certs;
pub mod child;
pub mod chromium;
pub mod client;
pub mod cluster;
pub mod devtools;
pub mod echo;
pub mod fake_api;
mod fake_api_objects;
mod fake_api_watch;
pub mod identity;
pub mod injector;
pub mod key_formats;
pub mod kubelet;
pub mod pebble;
pub mod process;
pub mod proxy;
pub mod rbac;
pub mod recorder;
pub mod served;

use std::future::Future;
use std::time::Duration;

// Re-exports for the test modules; each uses a different subset, so some go unused.
#[allow(unused_imports)]
pub use certs::{KeyFormat, KeyKind, LeafSpec, TestCa, TestPair, Validity};
#[allow(unused_imports)]
pub use client::{
    IO_TIMEOUT, any_certificate_config, assert_echo, client_config, echo_once, leaf_names,
    peer_leaf, tls_connect, try_echo_once, ws_config, ws_connect, ws_connect_with, ws_upgrade,
};
#[allow(unused_imports)]
pub use echo::{EchoServer, raw_upstream_tcp};
#[allow(unused_imports)]
pub use identity::{mtls_client, read_until};
#[allow(unused_imports)]
pub use kubelet::{KubeletDir, write_plain_pair};
#[allow(unused_imports)]
pub use process::{Sidecar, run_to_exit};
#[allow(unused_imports)]
pub use proxy::{METRIC_WAIT, TestProxy, http_get, serving_args};
#[allow(unused_imports)]
pub use served::{APP_NAME, Served};

/// How often [`wait_until`] re-checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `condition` every 20 ms until it holds; panics naming `what` after `timeout`.
/// Tests await the state they need with this instead of sleeping for a guessed time.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if !poll_until(timeout, condition).await {
        panic!("timed out after {timeout:?} waiting until {what}");
    }
}

/// Polls `condition` every 20 ms until it holds (true) or `timeout` passes (false), for
/// helpers that add to [`wait_until`]'s panic message.
pub async fn poll_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Makes aws-lc-rs the process-wide rustls provider, as `main` does; safe to call repeatedly.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
