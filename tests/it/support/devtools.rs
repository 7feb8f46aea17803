//! A minimal DevTools protocol client: numbered commands and their answers, buffered events,
//! and scripts run in the page. Enough to drive one page; nothing general.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

use super::chromium::STEP_TIMEOUT;

/// Deadline of the waits that run inside the page. Shorter than [`STEP_TIMEOUT`] so the page
/// reports what it was waiting for (and what it shows) before the DevTools call times out.
const PAGE_WAIT: Duration = Duration::from_secs(15);

/// A DevTools protocol connection to one target (the browser or a page).
pub struct DevTools {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    /// Events received but not yet taken by [`DevTools::wait_event`], oldest first. A test
    /// session produces a few dozen, so they are simply kept.
    events: Vec<Value>,
}

impl DevTools {
    /// Connects to a `ws://HOST:PORT/devtools/...` endpoint.
    pub async fn connect(url: &str) -> DevTools {
        let authority = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("not a ws:// URL: {url}"));
        let tcp = TcpStream::connect(authority)
            .await
            .unwrap_or_else(|e| panic!("connect to DevTools at {authority}: {e}"));
        let (ws, _) = tokio::time::timeout(STEP_TIMEOUT, client_async(url, tcp))
            .await
            .unwrap_or_else(|_| panic!("DevTools handshake at {url} timed out"))
            .unwrap_or_else(|e| panic!("DevTools handshake at {url}: {e}"));
        DevTools {
            ws,
            next_id: 0,
            events: Vec::new(),
        }
    }

    /// Sends one command and returns its `result`; fails on an error answer or none in time.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        tokio::time::timeout(
            STEP_TIMEOUT,
            self.ws.send(Message::text(request.to_string())),
        )
        .await
        .unwrap_or_else(|_| panic!("send {method}: timed out"))
        .unwrap_or_else(|e| panic!("send {method}: {e}"));
        let answer = self
            .wait_for(&format!("answer to {method}"), |message| {
                message["id"] == id
            })
            .await;
        if let Some(error) = answer.get("error") {
            panic!("{method} failed: {error}");
        }
        answer["result"].clone()
    }

    /// Takes the oldest event `method`, waiting for one if none has arrived yet.
    pub async fn wait_event(&mut self, method: &str) -> Value {
        let queued = self
            .events
            .iter()
            .position(|event| event["method"] == method);
        if let Some(at) = queued {
            return self.events.remove(at);
        }
        self.wait_for(&format!("{method} event"), |message| {
            message["method"] == method
        })
        .await
    }

    /// Reads messages until one is `wanted`, keeping the events read on the way.
    async fn wait_for(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        tokio::time::timeout(STEP_TIMEOUT, async {
            loop {
                let message = self.receive().await;
                if wanted(&message) {
                    return message;
                }
                if message.get("method").is_some() {
                    self.events.push(message);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {what} within {STEP_TIMEOUT:?}"))
    }

    /// The next protocol message.
    async fn receive(&mut self) -> Value {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("DevTools sent bad JSON ({e}): {text}"));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("DevTools connection failed: {e}"),
                None => panic!("DevTools connection closed"),
            }
        }
    }

    /// Runs `body` as an async function in the page and returns its value. The body gets
    /// `$(id)` for `document.getElementById` and `await until(what, condition)`, which polls
    /// until `condition()` holds and throws, with what the page shows, after [`PAGE_WAIT`].
    pub async fn run_in_page(&mut self, body: &str) -> Value {
        let expression = format!(
            "(async () => {{
                const $ = (id) => document.getElementById(id);
                const deadline = Date.now() + {wait_ms};
                const until = async (what, condition) => {{
                    while (!condition()) {{
                        if (Date.now() > deadline) {{
                            throw new Error('timed out waiting until ' + what +
                                '; #status: ' + $('status').textContent +
                                '; #log: ' + [...$('log').children]
                                    .map((li) => li.className + ' ' + li.textContent).join(' | '));
                        }}
                        await new Promise((resolve) => setTimeout(resolve, 20));
                    }}
                }};
                {body}
            }})()",
            wait_ms = PAGE_WAIT.as_millis(),
        );
        let params =
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true });
        let result = self.call("Runtime.evaluate", params).await;
        if let Some(details) = result.get("exceptionDetails") {
            let why = details
                .pointer("/exception/description")
                .unwrap_or(&details["text"]);
            panic!("script in the page failed: {why}");
        }
        result["result"]["value"].clone()
    }

    /// Clicks the middle of the element with `id` with the mouse, as a person would: it must
    /// be on screen and enabled to work.
    pub async fn click(&mut self, id: &str) {
        let script = format!(
            "const box = $({id}).getBoundingClientRect();
             return [box.x + box.width / 2, box.y + box.height / 2];",
            id = Value::from(id),
        );
        let point = self.run_in_page(&script).await;
        let (x, y) = (&point[0], &point[1]);
        for kind in ["mousePressed", "mouseReleased"] {
            let event = json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 });
            self.call("Input.dispatchMouseEvent", event).await;
        }
    }
}
