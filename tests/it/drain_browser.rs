//! The drain's Close frames as a browser sees them (issue 17, acceptance 2 and 3): headless
//! Chromium through the real binary, which is sent SIGTERM while the page's WebSocket is open.
//!
//! - The demo page's own socket: its `onclose` gets the configured code and reason, cleanly.
//! - A permessage-deflate stream from `apps/deflate_echo.py` (Debian's python3-websockets):
//!   every compressed message the app sent before the close arrives whole and in order, and
//!   both sides see one closing handshake with the configured code.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::Command;

use crate::support::child::{Process, spawn_collector};
use crate::support::chromium::{Chromium, STEP_TIMEOUT, find_chromium};
use crate::support::devtools::DevTools;
use crate::support::*;

/// The drain's Close, deliberately not the default 1012 "service restart".
const CODE: u16 = 4000;
const REASON: &str = "deploy";

/// How long the drain may take end to end: the lame duck, the spread, the closing handshakes
/// (well under a second here) and a loaded machine's slack.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// The interpreter Debian's python3-websockets is installed for. Named by path: a `python3`
/// earlier on PATH (pyenv, a virtualenv) would not see Debian's packages.
const PYTHON: &str = "/usr/bin/python3";

/// Starts the sidecar in front of `upstream` with a self-signed certificate (Chromium runs
/// with `--ignore-certificate-errors`) and the drain's Close configured; `extra` adds flags.
async fn start_sidecar(upstream: &str, extra: &[&str]) -> Sidecar {
    let code = CODE.to_string();
    let mut args = vec![
        "--upstream",
        upstream,
        "--drain-close-spread",
        "2s",
        "--drain-close-code",
        &code,
        "--drain-close-reason",
        REASON,
    ];
    args.extend_from_slice(extra);
    Sidecar::spawn(&args).await
}

/// Chromium with one page open at `url`, loaded.
async fn open(url: &str) -> (Chromium, DevTools) {
    let mut chromium = Chromium::start(&find_chromium()).await;
    let mut page = chromium.open_page().await;
    page.call("Page.enable", json!({})).await;
    let navigation = page.call("Page.navigate", json!({ "url": url })).await;
    if let Some(error) = navigation.get("errorText") {
        panic!("Chromium could not load {url}: {error}");
    }
    page.wait_event("Page.loadEventFired").await;
    (chromium, page)
}

/// Acceptance 3: the demo page's WebSocket is closed by the drain with the configured code.
#[tokio::test]
async fn demo_page_onclose_sees_the_drain_close_code_and_reason() {
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = app.local_addr().unwrap().to_string();
    tokio::spawn(wss_sidecar::demo::serve(app, std::future::pending()));
    let mut sidecar = start_sidecar(&upstream, &[]).await;
    let url = format!("https://127.0.0.1:{}/", sidecar.addr.port());
    let (chromium, mut page) = open(&url).await;

    // The page's own socket (a top-level `const ws` of its script, so visible to scripts run
    // in the page): a second close listener records what the page's `onclose` is given.
    let connected = page
        .run_in_page(
            "await until('#status says connected', () => {
                 if (['error', 'closed'].includes($('status').className)) {
                     throw new Error('the page did not connect: ' + $('status').textContent);
                 }
                 return $('status').className === 'connected';
             });
             ws.addEventListener('close', (event) => {
                 window.drainClose = { code: event.code, reason: event.reason,
                                       wasClean: event.wasClean };
             });
             ws.send('before the drain');
             await until('the echo', () => [...$('log').children]
                 .some((li) => li.className === 'echo' && li.textContent === 'before the drain'));
             return ws.url;",
        )
        .await;
    assert_eq!(
        connected,
        format!("wss://127.0.0.1:{}/ws", sidecar.addr.port()),
        "the page's socket goes through the sidecar"
    );

    sidecar.signal("TERM");
    let seen = page
        .run_in_page(
            "await until('the drain closes the socket', () => window.drainClose !== undefined);
             const notes = [...$('log').children].filter((li) => li.className === 'note');
             return { close: window.drainClose, status: $('status').textContent,
                      state: $('status').className,
                      note: notes.map((li) => li.textContent).join(' | ') };",
        )
        .await;
    assert_eq!(
        seen["close"],
        json!({ "code": CODE, "reason": REASON, "wasClean": true }),
        "onclose: the configured code and reason, after a clean closing handshake: {seen}"
    );
    assert_eq!(seen["state"], "closed", "{seen}");
    assert_eq!(
        seen["status"],
        format!("closed (code {CODE})"),
        "what the demo page shows: {seen}"
    );
    assert_eq!(
        seen["note"],
        format!("connection closed (code {CODE})"),
        "the page's log: {seen}"
    );

    let status = sidecar.wait(DRAIN_WAIT).await;
    assert_eq!(
        status.code(),
        Some(0),
        "the sidecar exits 0 after the drain"
    );
    chromium.close(page).await;
}

/// `apps/deflate_echo.py` on a free port, its event lines kept.
struct DeflateApp {
    process: Process,
    addr: String,
}

impl DeflateApp {
    async fn start() -> DeflateApp {
        let importable = std::process::Command::new(PYTHON)
            .args(["-c", "import websockets"])
            .output();
        match importable {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "{PYTHON} cannot import websockets ({}): install Debian's python3-websockets \
                 with scripts/install-test-deps, then run the tests again",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            ),
            Err(e) => panic!(
                "cannot run {PYTHON} ({e}): install Debian's python3 and python3-websockets \
                 with scripts/install-test-deps, then run the tests again"
            ),
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/apps/deflate_echo.py");
        let mut child = Command::new(PYTHON)
            .args([script, "127.0.0.1", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("run {PYTHON} {script}: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let listening = spawn_collector(child.stdout.take(), &output, "listening ");
        spawn_collector(child.stderr.take(), &output, "");
        let process = Process {
            name: "deflate_echo.py",
            child,
            output,
        };
        let line = process.wait_for_line(listening, STEP_TIMEOUT).await;
        let port = line
            .strip_prefix("listening ")
            .and_then(|port| port.trim().parse::<u16>().ok())
            .unwrap_or_else(|| panic!("deflate_echo.py printed {line:?}"));
        DeflateApp {
            process,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    /// The app's JSON event lines named `event`.
    fn events(&self, event: &str) -> Vec<Value> {
        let output = self.process.output.lock().unwrap();
        output
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|value| value["event"] == event)
            .collect()
    }
}

/// The page's side of the stream: the app's messages regenerated and checked as they come
/// (the same LCG, words and CRC-32 as `deflate_echo.py`), everything recorded in
/// `window.drain`, and a progress line in `#status` for a failure's message.
const STREAM_PAGE: &str = r#"
    const SIZES = [200 * 1024, 1000, 30 * 1024, 200 * 1024, 17, 64 * 1024];
    const WORDS = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel',
                   'india', 'juliett', 'kilo', 'lima', 'mike', 'november', 'oscar', 'papa'];
    const body = (seq, size) => {
        let x = seq >>> 0;
        const parts = [];
        let length = 0;
        while (length < size) {
            x = (Math.imul(x, 1103515245) + 12345) >>> 0;
            const word = WORDS[(x >>> 16) & 15];
            parts.push(word);
            length += word.length + 1;
        }
        return parts.join(' ').slice(0, size).padEnd(size, ' ');
    };
    const table = Array.from({ length: 256 }, (_, n) => {
        let c = n;
        for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
        return c >>> 0;
    });
    const crc32 = (text) => {
        let c = 0xffffffff;
        for (let i = 0; i < text.length; i++) c = table[(c ^ text.charCodeAt(i)) & 0xff] ^ (c >>> 8);
        return ((c ^ 0xffffffff) >>> 0).toString(16).padStart(8, '0');
    };
    const drain = window.drain = { received: 0, chars: 0, broken: [], echoed: false,
                                   extensions: null, close: null, error: false };
    const broken = (what) => {
        drain.broken.push(what);
        const item = document.createElement('li');
        item.textContent = what;
        $('log').appendChild(item);
    };
    const ws = new WebSocket(WS_URL);
    ws.onopen = () => {
        drain.extensions = ws.extensions;
        ws.send('hello from the page');
    };
    ws.onmessage = (event) => {
        if (event.data === 'hello from the page') {
            drain.echoed = true;
            return;
        }
        const data = event.data;
        const [seq, size, crc] = data.split(' ', 3).map((s, i) => (i < 2 ? Number(s) : s));
        const text = data.slice(`${data.split(' ', 3).join(' ')} `.length);
        drain.chars += data.length;
        if (seq !== drain.received) broken(`message ${drain.received}: got seq ${seq}`);
        else if (size !== SIZES[seq % SIZES.length] || text.length !== size)
            broken(`message ${seq}: ${text.length} characters, header says ${size}`);
        else if (crc32(text) !== crc) broken(`message ${seq}: CRC-32 ${crc32(text)}, header ${crc}`);
        else if (text !== body(seq, size)) broken(`message ${seq}: content differs`);
        drain.received += 1;
        $('status').textContent = `received ${drain.received}, broken ${drain.broken.length}`;
    };
    ws.onerror = () => { drain.error = true; };
    ws.onclose = (event) => {
        drain.close = { code: event.code, reason: event.reason, wasClean: event.wasClean };
        $('status').textContent += `; closed ${event.code} ${event.reason}`;
    };
    await until('six messages arrive (two of 200 KiB)', () => {
        if (drain.close) throw new Error('closed early: ' + JSON.stringify(drain));
        return drain.received >= 6 && drain.echoed;
    });
    return drain.received;
"#;

/// Acceptance 2: a permessage-deflate stream passes intact through the drain.
#[tokio::test]
async fn compressed_stream_passes_intact_through_the_drain() {
    let app = DeflateApp::start().await;
    // A lame duck of a second keeps the stream flowing after SIGTERM whatever point of the
    // spread the close lands on.
    let mut sidecar = start_sidecar(&app.addr, &["--lame-duck", "1s"]).await;
    // The app's own page (#status and #log, nothing else), over https:// through the sidecar.
    let origin = format!("127.0.0.1:{}", sidecar.addr.port());
    let (chromium, mut page) = open(&format!("https://{origin}/")).await;

    let ws_url = format!("wss://{origin}/stream");
    let script = STREAM_PAGE.replace("WS_URL", &Value::from(ws_url).to_string());
    let before = page.run_in_page(&script).await;
    let before = before.as_u64().expect("messages before the drain");

    sidecar.signal("TERM");
    let drain = page
        .run_in_page(
            "await until('the drain closes the socket', () => window.drain.close !== null);
             return window.drain;",
        )
        .await;
    let status = sidecar.wait(DRAIN_WAIT).await;
    assert_eq!(
        status.code(),
        Some(0),
        "the sidecar exits 0 after the drain"
    );

    assert_eq!(
        drain["broken"],
        json!([]),
        "every message whole and in order: {drain}"
    );
    assert_eq!(drain["error"], false, "no error on the socket: {drain}");
    assert_eq!(
        drain["echoed"], true,
        "the page's own message came back: {drain}"
    );
    let extensions = drain["extensions"].as_str().unwrap_or_default();
    assert!(
        extensions.starts_with("permessage-deflate"),
        "Chromium negotiated permessage-deflate through the sidecar: {extensions:?}"
    );
    assert_eq!(
        drain["close"],
        json!({ "code": CODE, "reason": REASON, "wasClean": true }),
        "the drain's Close reached the page after a clean closing handshake: {drain}"
    );
    let received = drain["received"].as_u64().unwrap_or_default();
    assert!(
        received > before,
        "messages kept arriving after SIGTERM ({before} before, {received} in all)"
    );

    wait_until(
        "the app logs its closed connection",
        STEP_TIMEOUT,
        || async { !app.events("closed").is_empty() },
    )
    .await;
    let opened = app.events("open");
    assert_eq!(
        opened.len(),
        1,
        "one connection reached the app: {opened:?}"
    );
    assert_eq!(
        opened[0]["extensions"],
        json!(["permessage-deflate"]),
        "the app negotiated permessage-deflate: {opened:?}"
    );
    let closed = &app.events("closed")[0];
    assert_eq!(closed["rcvd_code"], CODE, "the app got our Close: {closed}");
    assert_eq!(closed["rcvd_reason"], REASON, "{closed}");
    assert_eq!(closed["sent_code"], CODE, "the app answered it: {closed}");
    assert_eq!(
        closed["rcvd_then_sent"], true,
        "one closing handshake, started by the sidecar: {closed}"
    );
    assert_eq!(
        closed["sent"], received,
        "every message the app sent before its Close reached the page"
    );

    // The bytes were compressed on the wire: the sidecar moved far fewer than the page read.
    let chars = drain["chars"].as_u64().unwrap_or_default();
    // The page itself came on a connection of its own; the WebSocket's is the drained one.
    let moved = sidecar
        .logs()
        .iter()
        .filter(|line| line.contains("connection closed"))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["close.reason"] == "drain_close_frame")
        .find_map(|line| field(&line, "bytes.upstream_to_client"))
        .expect("the sidecar logs the drained connection's bytes");
    eprintln!(
        "{received} messages ({before} before SIGTERM), {chars} characters in {moved} bytes; \
         the app: {closed}"
    );
    assert!(
        moved * 2 < chars,
        "compressed frames on the wire: {moved} bytes carried {chars} characters"
    );
    chromium.close(page).await;
}

/// A field of a JSON log line, at its top level or under `fields`.
fn field(line: &Value, key: &str) -> Option<u64> {
    line.get(key)
        .or_else(|| line.get("fields").and_then(|fields| fields.get(key)))
        .and_then(Value::as_u64)
}
