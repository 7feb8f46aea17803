//! WebSockets closed by the sidecar itself, seen by real clients and a real app
//! (tokio-tungstenite both): the drain's Close frames spread over `--drain-close-spread`,
//! `--max-connection-age`, and the proxy's own Pings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::support::acme::scrape;
use crate::support::*;

/// Bytes of each fragment of the app's messages, and fragments per message.
const FRAGMENT: usize = 8 * 1024;
const FRAGMENTS: usize = 8;

/// What the app saw on one connection.
#[derive(Debug, Default, Clone)]
struct AppView {
    /// Messages completely sent (flushed) before the Close arrived.
    sent: usize,
    /// The code of the Close it received, if any.
    close_code: Option<u16>,
    /// Its stream ended after the Close: the closing handshake completed.
    closed_cleanly: bool,
    /// Pong payloads it received.
    pongs: Vec<Vec<u8>>,
}

/// A WebSocket app: every `talk_every`-th connection sends large fragmented messages
/// continuously (each whole before the next, never interrupted by its Close reply); the app
/// answers `ping-me` with a Ping of its own, and records what it sees.
struct FrameApp {
    addr: SocketAddr,
    views: Arc<Mutex<BTreeMap<usize, AppView>>>,
    _tasks: JoinSet<()>,
}

/// The content of message `seq`: its number, then bytes derived from it.
fn message_bytes(seq: u32) -> Vec<u8> {
    let mut bytes = seq.to_be_bytes().to_vec();
    bytes.extend(
        (0..FRAGMENT * FRAGMENTS - 4).map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq) as u8),
    );
    bytes
}

/// Whether `bytes` is a whole message from [`message_bytes`].
fn message_is_whole(bytes: &[u8]) -> bool {
    let Some(seq) = bytes
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    else {
        return false;
    };
    bytes == message_bytes(seq).as_slice()
}

impl FrameApp {
    async fn start(talk_every: usize) -> FrameApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let views: Arc<Mutex<BTreeMap<usize, AppView>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let shared = Arc::clone(&views);
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            for index in 0.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let views = Arc::clone(&shared);
                let talks = talk_every != 0 && index % talk_every == 0;
                connections.spawn(serve_app(tcp, index, talks, views));
            }
        });
        FrameApp {
            addr,
            views,
            _tasks: tasks,
        }
    }

    fn views(&self) -> BTreeMap<usize, AppView> {
        self.views.lock().unwrap().clone()
    }
}

async fn serve_app(
    tcp: tokio::net::TcpStream,
    index: usize,
    talks: bool,
    views: Arc<Mutex<BTreeMap<usize, AppView>>>,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(ws_config())).await
    else {
        return;
    };
    let update = |f: &dyn Fn(&mut AppView)| f(views.lock().unwrap().entry(index).or_default());
    update(&|_| {});
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut seq = 0u32;
    let mut closing = false;
    loop {
        tokio::select! {
            _ = tick.tick(), if talks && !closing => {
                // One whole fragmented message, written without reading in between, so the
                // reply to a Close cannot land inside it.
                let bytes = message_bytes(seq);
                let mut ok = true;
                for (i, chunk) in bytes.chunks(FRAGMENT).enumerate() {
                    let opcode = if i == 0 { OpCode::Data(Data::Binary) } else { OpCode::Data(Data::Continue) };
                    let frame = Frame::message(chunk.to_vec(), opcode, i == FRAGMENTS - 1);
                    if ws.feed(Message::Frame(frame)).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                if ok && ws.flush().await.is_ok() {
                    seq += 1;
                    update(&|v| v.sent += 1);
                } else {
                    closing = true;
                }
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    update(&|v| v.close_code = code);
                    closing = true;
                }
                Some(Ok(Message::Pong(payload))) => {
                    let payload = payload.to_vec();
                    update(&|v| v.pongs.push(payload.clone()));
                }
                Some(Ok(Message::Text(text))) if text.as_str() == "ping-me" => {
                    let _ = ws.send(Message::Ping(b"app-ping".to_vec().into())).await;
                }
                Some(Ok(Message::Text(text))) => {
                    let _ = ws.send(Message::Text(text)).await;
                }
                Some(Ok(_)) => {}
                None => {
                    if closing {
                        update(&|v| v.closed_cleanly = true);
                    }
                    return;
                }
                Some(Err(_)) => return,
            }
        }
    }
}

/// What a client saw.
#[derive(Debug, Default)]
struct ClientView {
    messages: usize,
    broken: usize,
    /// Close frames received: their codes and when.
    closes: Vec<(Option<u16>, Instant)>,
    /// Data frames after the Close.
    after_close: usize,
}

/// Reads until the stream ends (tungstenite answers the Close itself), checking each message.
async fn watch_client<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    limit: Duration,
) -> ClientView
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut view = ClientView::default();
    let _ = tokio::time::timeout(limit, async {
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Binary(bytes) => {
                    if !view.closes.is_empty() {
                        view.after_close += 1;
                    }
                    view.messages += 1;
                    if !message_is_whole(&bytes) {
                        view.broken += 1;
                    }
                }
                Message::Close(frame) => {
                    view.closes
                        .push((frame.map(|f| u16::from(f.code)), Instant::now()));
                }
                _ => {}
            }
        }
    })
    .await;
    view
}

struct Setup {
    sidecar: Sidecar,
    app: FrameApp,
    config: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

async fn start(talk_every: usize, extra: &[&str]) -> Setup {
    install_crypto_provider();
    let ca = TestCa::new("drain close CA");
    let dir = tempfile::tempdir().unwrap();
    write_plain_pair(dir.path(), &ca.issue(LeafSpec::new(&["app.test"])));
    let app = FrameApp::start(talk_every).await;
    let upstream = app.addr.to_string();
    let mut args = vec![
        "--upstream",
        &upstream,
        "--cert-dir",
        dir.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let sidecar = Sidecar::spawn(&args).await;
    let config = client_config(&[ca.cert_der()], &[b"http/1.1"]);
    Setup {
        sidecar,
        app,
        config,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_spreads_one_close_frame_per_websocket_over_the_window() {
    const CLIENTS: usize = 1000;
    const SPREAD: u64 = 20;
    let mut s = start(
        10,
        &[
            "--drain-close-spread",
            "20s",
            "--drain-timeout",
            "40s",
            "--max-connections",
            "2000",
        ],
    )
    .await;
    let addr = s.sidecar.addr;
    let mut opened = Vec::with_capacity(CLIENTS);
    let mut connecting = JoinSet::new();
    for i in 0..CLIENTS {
        let config = Arc::clone(&s.config);
        connecting.spawn(async move { (i, ws_connect(addr, "app.test", config).await) });
        if connecting.len() >= 50 {
            let (_, ws) = connecting.join_next().await.unwrap().unwrap();
            opened.push(ws.expect("connect"));
        }
    }
    while let Some(joined) = connecting.join_next().await {
        opened.push(joined.unwrap().1.expect("connect"));
    }
    let app_views = || s.app.views();
    wait_until(
        "the app has every connection",
        Duration::from_secs(30),
        || async { app_views().len() == CLIENTS },
    )
    .await;
    let mut watching = JoinSet::new();
    for ws in opened {
        watching.spawn(watch_client(ws, Duration::from_secs(60)));
    }
    // Let the talking connections carry a few messages before the drain.
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(
        scrape(s.sidecar.admin)
            .await
            .value("wss_sidecar_drain_close_rate", &[]),
        0.0
    );

    let term = Instant::now();
    s.sidecar.signal("TERM");
    // While it drains (the admin port stays up until the process exits): the planned pace.
    wait_until(
        "the drain shows its pace",
        Duration::from_secs(10),
        || async {
            let m = scrape(s.sidecar.admin).await;
            m.value("wss_sidecar_drain_close_rate", &[]) == CLIENTS as f64 / SPREAD as f64
                && m.value("wss_sidecar_drain_close_planned", &[]) == CLIENTS as f64
        },
    )
    .await;
    // Each client answers our Close with its code: counted as seen from the client.
    wait_until(
        "the clients' answering Closes are counted",
        Duration::from_secs(30),
        || async {
            let code = [("from", "client"), ("code", "1012")];
            scrape(s.sidecar.admin)
                .await
                .value("wss_sidecar_websocket_close_codes_total", &code)
                >= CLIENTS as f64 / 2.0
        },
    )
    .await;
    let mut views = Vec::with_capacity(CLIENTS);
    while let Some(view) = watching.join_next().await {
        views.push(view.unwrap());
    }
    let status = s.sidecar.wait(Duration::from_secs(30)).await;
    let exited = Instant::now();
    assert_eq!(
        status.code(),
        Some(0),
        "the sidecar exits 0 after a clean drain"
    );

    let mut per_second = vec![0usize; SPREAD as usize + 5];
    let mut last_close = term;
    for (i, view) in views.iter().enumerate() {
        assert_eq!(
            view.closes.len(),
            1,
            "client {i}: one Close frame: {view:?}"
        );
        let (code, at) = view.closes[0];
        assert_eq!(code, Some(1012), "client {i}: the configured code");
        assert_eq!(view.broken, 0, "client {i}: every message whole");
        assert_eq!(view.after_close, 0, "client {i}: no data after the Close");
        let second = usize::try_from((at - term).as_secs()).unwrap();
        let last = per_second.len() - 1;
        per_second[second.min(last)] += 1;
        last_close = last_close.max(at);
    }
    let average = CLIENTS / SPREAD as usize;
    eprintln!("closes per second after SIGTERM: {per_second:?}");
    assert!(
        per_second.iter().all(|&n| n <= 2 * average),
        "no second holds more than twice the average ({average}): {per_second:?}"
    );
    assert!(
        last_close - term >= Duration::from_secs(SPREAD - 2),
        "the closes were spread over the window, the last at {:?}",
        last_close - term
    );
    assert!(
        exited >= last_close,
        "the process exits after the last close"
    );

    let apps = s.app.views();
    let received: usize = views.iter().map(|v| v.messages).sum();
    let sent: usize = apps.values().map(|v| v.sent).sum();
    assert!(sent > 0, "the talking connections sent messages");
    assert_eq!(
        received, sent,
        "every message the app sent before its Close arrived"
    );
    for (index, view) in &apps {
        assert_eq!(
            view.close_code,
            Some(1012),
            "app connection {index} got our Close: {view:?}"
        );
        assert!(
            view.closed_cleanly,
            "app connection {index}: the closing handshake completed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_close_at_their_maximum_age_and_new_ones_are_accepted_throughout() {
    let s = start(
        0,
        &[
            "--max-connection-age",
            "5s",
            "--max-connection-age-jitter",
            "2s",
        ],
    )
    .await;
    let mut watching = JoinSet::new();
    // One new connection every 250 ms for 8 s: the later ones open while the first close.
    for _ in 0..32 {
        let ws = ws_connect(s.sidecar.addr, "app.test", Arc::clone(&s.config))
            .await
            .expect("a new connection is accepted at any time");
        let opened = Instant::now();
        watching.spawn(async move { (opened, watch_client(ws, Duration::from_secs(15)).await) });
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut ages = Vec::new();
    while let Some(joined) = watching.join_next().await {
        let (opened, view) = joined.unwrap();
        assert_eq!(view.closes.len(), 1, "{view:?}");
        let (code, at) = view.closes[0];
        assert_eq!(code, Some(1012));
        ages.push((at - opened).as_secs_f64());
    }
    ages.sort_by(f64::total_cmp);
    eprintln!("ages at close: {ages:?}");
    assert!(
        ages.first().is_some_and(|&a| a >= 5.0),
        "none before 5 s: {ages:?}"
    );
    // 7 s, and what a loaded machine adds to a close.
    assert!(
        ages.last().is_some_and(|&a| a <= 7.5),
        "none after 7 s: {ages:?}"
    );
    assert!(
        ages.last().unwrap() - ages.first().unwrap() > 0.5,
        "the jitter spreads them: {ages:?}"
    );
    // The client sees the Close before the sidecar has finished the close and logged it.
    wait_until(
        "each is logged as closed for its age",
        Duration::from_secs(5),
        || async {
            s.sidecar
                .logs()
                .iter()
                .filter(|l| l.contains("\"max_age\""))
                .count()
                >= 32
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_close_a_silent_client_and_their_pongs_never_reach_the_app() {
    let s = start(0, &["--ws-ping-interval", "1s", "--ws-ping-timeout", "1s"]).await;
    // A live client: tungstenite answers every Ping while it reads.
    let mut live = ws_connect(s.sidecar.addr, "app.test", Arc::clone(&s.config))
        .await
        .unwrap();
    // A silent one: its upgrade done, it never reads again, so it answers nothing.
    let silent = ws_connect(s.sidecar.addr, "app.test", Arc::clone(&s.config))
        .await
        .unwrap();
    let silent_since = Instant::now();
    let admin = s.sidecar.admin;
    let ping_timeouts = || async move {
        let reason = [("reason", "ping_timeout")];
        scrape(admin)
            .await
            .value("wss_sidecar_connections_closed_total", &reason)
    };
    // The live client's own app Ping comes back as a Pong to the app; ours never do.
    assert_echo(&mut live, Message::text("hello")).await;
    live.send(Message::text("ping-me")).await.unwrap();
    let watching = tokio::spawn(async move {
        let mut pings = 0;
        let until = Instant::now() + Duration::from_secs(4);
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until.into(), live.next()).await {
            if matches!(message, Message::Ping(_)) {
                pings += 1;
            }
        }
        (pings, live)
    });
    wait_until(
        "the silent client is closed for not answering",
        Duration::from_secs(6),
        || async { ping_timeouts().await == 1.0 },
    )
    .await;
    let silent_for = silent_since.elapsed();
    assert!(
        silent_for <= Duration::from_secs(3),
        "closed within interval + timeout (+ slack): {silent_for:?}"
    );
    let (pings, mut live) = watching.await.unwrap();
    assert!(
        pings >= 2,
        "the live client got our Pings ({pings}) and was not closed"
    );
    assert_echo(&mut live, Message::text("still here")).await;
    drop(silent);
    let views = s.app.views();
    let pongs: Vec<&Vec<u8>> = views.values().flat_map(|v| &v.pongs).collect();
    assert_eq!(
        pongs,
        [&b"app-ping".to_vec()],
        "only the app's own Pong reached the app"
    );
    let silent_app = views
        .values()
        .filter(|v| v.close_code == Some(1001))
        .count();
    assert_eq!(
        silent_app, 1,
        "the app was told the silent client went away: {views:?}"
    );
}
