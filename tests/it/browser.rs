//! The README's quick start in a real browser: `wss-sidecar demo`, its https:// page opened in
//! headless Chromium, and a message typed, sent and echoed over the page's own wss:// socket.
//!
//! # Layout
//! - here: the test.
//! - `support::chromium`: headless Chromium with a throw-away profile, found on PATH.
//! - `support::devtools`: the whole DevTools protocol client, over the suite's WebSocket client.
//!
//! The demo is started as a person would, by `support::process::start_demo`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::chromium::{Chromium, find_chromium};
use crate::support::process::start_demo;

#[tokio::test]
async fn demo_page_echoes_over_wss_in_a_real_browser() {
    let chromium_path = find_chromium();
    let (_demo, page_url) = start_demo().await;
    let port = page_url
        .strip_prefix("https://localhost:")
        .and_then(|rest| rest.strip_suffix('/'))
        .and_then(|port| port.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("expected https://localhost:PORT/, the demo printed {page_url}"));
    assert_ne!(
        port, 0,
        "the demo must print the port it bound, not the one asked for"
    );
    let expected_ws_url = format!("wss://localhost:{port}/ws");

    let mut chromium = Chromium::start(&chromium_path).await;
    let mut page = chromium.open_page().await;
    page.call("Page.enable", json!({})).await;
    page.call("Network.enable", json!({})).await;
    let navigation = page.call("Page.navigate", json!({ "url": page_url })).await;
    if let Some(error) = navigation.get("errorText") {
        panic!("Chromium could not load {page_url}: {error}");
    }
    page.wait_event("Page.loadEventFired").await;

    // What the browser saw on the wire: the proxy's own certificate and ALPN answered.
    let document = page.wait_event("Network.responseReceived").await["params"]["response"].take();
    assert_eq!(
        document["url"],
        page_url.as_str(),
        "first response: {document}"
    );
    assert_eq!(document["status"], 200, "{document}");
    assert_eq!(
        document["protocol"], "http/1.1",
        "ALPN offered by the proxy: {document}"
    );
    let tls = &document["securityDetails"];
    assert!(
        tls["protocol"]
            .as_str()
            .is_some_and(|p| p.starts_with("TLS")),
        "TLS details: {tls}"
    );
    assert!(
        tls["sanList"]
            .as_array()
            .is_some_and(|names| names.contains(&json!("localhost"))),
        "the demo's self-signed certificate names localhost: {tls}"
    );

    let connected = page
        .run_in_page(
            "await until('#status says connected', () => {
                 // Both states are final: fail now rather than at the deadline.
                 if (['error', 'closed'].includes($('status').className)) {
                     throw new Error('the page did not connect: ' + $('status').textContent);
                 }
                 return $('status').className === 'connected';
             });
             return { protocol: location.protocol, status: $('status').textContent,
                      url: $('url').textContent };",
        )
        .await;
    // The page came over TLS from the proxy, so its script had to use wss:// (mixed content).
    assert_eq!(connected["protocol"], "https:", "page state: {connected}");
    let status = connected["status"].as_str().unwrap_or_default();
    let ws_url = status
        .strip_prefix("connected to ")
        .unwrap_or_else(|| panic!("#status should read `connected to URL`, it reads {status:?}"));
    assert!(
        ws_url.starts_with("wss://"),
        "the page connected to {ws_url}"
    );
    assert_eq!(ws_url, expected_ws_url);
    assert_eq!(
        connected["url"], expected_ws_url,
        "the URL shown on the page"
    );
    let handshake = page
        .wait_event("Network.webSocketHandshakeResponseReceived")
        .await;
    assert_eq!(
        handshake["params"]["response"]["status"], 101,
        "the WebSocket upgrade through the proxy: {handshake}"
    );

    let message = unique_message();
    page.click("input").await;
    page.call("Input.insertText", json!({ "text": message }))
        .await;
    page.click("send").await;
    let wait_for_echo = format!(
        "const message = {message};
         await until('#log shows the echo', () =>
             [...$('log').children].some(li => li.className === 'echo' && li.textContent === message));
         return [...$('log').children].map(li => [li.className, li.textContent]);",
        message = Value::from(message.as_str()),
    );
    let log = page.run_in_page(&wait_for_echo).await;
    assert_eq!(
        log,
        json!([["sent", message], ["echo", message]]),
        "#log should hold the sent message, then its echo"
    );

    chromium.close(page).await;
}

/// A message no earlier run could have left on the page, with non-ASCII to show that UTF-8
/// survives the browser, the TLS proxy and the app.
fn unique_message() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("héllo ✓ through wss-sidecar {}-{nanos}", std::process::id())
}
