//! The README's contract: two set-up commands; the first runs the demo behind the proxy and
//! prints a URL that serves the page and the wss:// echo with a self-signed certificate.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn demo_prints_a_url_that_serves_the_page_and_the_wss_echo() {
    install_crypto_provider();
    let (mut demo, url) = process::start_demo().await;
    let port: u16 = url
        .trim_start_matches("https://localhost:")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("unexpected URL {url}"));
    let addr = format!("127.0.0.1:{port}").parse().unwrap();

    // The page, over TLS, from the self-signed certificate for localhost, accepted as a person
    // clicking through the browser's warning would.
    let config = any_certificate_config();
    let mut tls = tls_connect(addr, "localhost", Arc::clone(&config))
        .await
        .unwrap();
    assert!(leaf_names(&peer_leaf(&tls)).contains(&"localhost".to_string()));
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_string(&mut page)).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("wss-sidecar demo") && page.contains("wss://"),
        "{page}"
    );
    drop(tls);

    // The page's script opens wss://<same origin>/ws: do the same.
    let mut ws = ws_connect(addr, "localhost", config).await.unwrap();
    assert_echo(&mut ws, Message::text("hello from the quick start")).await;

    // The demo stops cleanly on Ctrl-C.
    let pid = demo.child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    drop(ws);
    let status = tokio::time::timeout(Duration::from_secs(15), demo.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The README's quick start is exactly two commands: the demo, and the test script that
/// `.ci/run` also calls.
#[test]
fn readme_quick_start_has_the_two_commands_ci_runs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let start = readme
        .find("## Quick start")
        .expect("a Quick start section");
    let section = &readme[start..];
    let block = section
        .split("```")
        .nth(1)
        .expect("a code block in the quick start");
    let commands: Vec<&str> = block
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        commands.len(),
        2,
        "exactly two set-up commands: {commands:?}"
    );
    assert!(
        commands[0].ends_with("-- demo"),
        "the first runs the demo: {}",
        commands[0]
    );
    let ci = std::fs::read_to_string(format!("{root}/.ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == commands[1]),
        ".ci/run must call the README's test command {:?}",
        commands[1]
    );
}
