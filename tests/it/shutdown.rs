//! Shutdown: the lame duck (not ready, still accepting; started by a signal or by
//! `wss-sidecar lame-duck`), then the drain (new connections refused, live ones finish), and
//! connections closed with close_notify and a FIN, never a TCP reset.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

struct Setup {
    sidecar: Sidecar,
    ca: TestCa,
    _app: EchoServer,
    _dir: tempfile::TempDir,
}

async fn start(extra: &[&str]) -> Setup {
    install_crypto_provider();
    let ca = TestCa::new("shutdown CA");
    let dir = tempfile::tempdir().unwrap();
    write_plain_pair(dir.path(), &ca.issue(LeafSpec::new(&["app.test"])));
    let app = EchoServer::start_tcp().await;
    let upstream = app.addr().to_string();
    let mut args = vec![
        "--upstream",
        &upstream,
        "--cert-dir",
        dir.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let sidecar = Sidecar::spawn(&args).await;
    Setup {
        sidecar,
        ca,
        _app: app,
        _dir: dir,
    }
}

async fn readyz(s: &Sidecar) -> u16 {
    http_get(s.admin, "/readyz")
        .await
        .map(|(status, _)| status)
        .unwrap_or(0)
}

#[tokio::test]
async fn sigterm_drains_live_websockets_then_exits_zero() {
    let mut s = start(&["--drain-timeout", "60s"]).await;
    assert_eq!(readyz(&s.sidecar).await, 200);
    let config = client_config(&[s.ca.cert_der()], &[b"http/1.1"]);
    let mut ws = ws_connect(s.sidecar.addr, "app.test", config.clone())
        .await
        .unwrap();
    assert_echo(&mut ws, Message::text("before")).await;

    s.sidecar.signal("TERM");
    let admin = s.sidecar.admin;
    wait_until("/readyz turns 503", Duration::from_secs(2), || async move {
        http_get(admin, "/readyz")
            .await
            .map(|(st, _)| st == 503)
            .unwrap_or(false)
    })
    .await;
    let addr = s.sidecar.addr;
    wait_until(
        "new connections are refused",
        Duration::from_secs(2),
        || async move { TcpStream::connect(addr).await.is_err() },
    )
    .await;
    assert!(
        ws_connect(addr, "app.test", config).await.is_err(),
        "a new client must not get in"
    );

    // The live WebSocket keeps working through the drain.
    for i in 0..5 {
        assert_echo(&mut ws, Message::text(format!("during drain {i}"))).await;
    }
    assert!(
        s.sidecar.child.try_wait().unwrap().is_none(),
        "must wait for the live connection"
    );

    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    // The close handshake is done and the proxy has closed its side; the client closes its own,
    // as browsers do.
    drop(ws);
    let status = s.sidecar.wait(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "clean drain exits 0");
}

#[tokio::test]
async fn drain_timeout_closes_what_is_left_and_exits_zero() {
    let mut s = start(&["--drain-timeout", "1s"]).await;
    let config = client_config(&[s.ca.cert_der()], &[b"http/1.1"]);
    let mut ws = ws_connect(s.sidecar.addr, "app.test", config)
        .await
        .unwrap();
    assert_echo(&mut ws, Message::text("hello")).await;

    let signalled = Instant::now();
    s.sidecar.signal("TERM");
    let status = s.sidecar.wait(Duration::from_secs(15)).await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before the drain timeout"
    );
    // The client sees its connection end.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        end.is_ok(),
        "the live connection was not closed at the drain deadline"
    );
}

#[tokio::test]
async fn sigint_also_drains() {
    let mut s = start(&[]).await;
    s.sidecar.signal("INT");
    assert_eq!(
        s.sidecar.wait(Duration::from_secs(10)).await.code(),
        Some(0)
    );
    assert!(
        s.sidecar
            .logs()
            .iter()
            .any(|l| l.contains("\"signal\":\"SIGINT\""))
    );
}

async fn refused(addr: std::net::SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_err()
}

#[tokio::test]
async fn sigterm_starts_a_lame_duck_that_still_accepts_then_drains() {
    let mut s = start(&["--lame-duck", "5s", "--drain-timeout", "30s"]).await;
    let config = client_config(&[s.ca.cert_der()], &[b"http/1.1"]);
    let mut old = ws_connect(s.sidecar.addr, "app.test", config.clone())
        .await
        .unwrap();

    let signalled = Instant::now();
    s.sidecar.signal("TERM");
    let admin = s.sidecar.admin;
    wait_until("/readyz turns 503", Duration::from_secs(2), || async move {
        http_get(admin, "/readyz")
            .await
            .is_ok_and(|(status, _)| status == 503)
    })
    .await;
    // Not ready, yet a client the load balancer still sends gets in and is served.
    let mut late = ws_connect(s.sidecar.addr, "app.test", config.clone())
        .await
        .expect("a new connection during the lame duck");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "the check ran after the lame duck; the machine is too slow for this test"
    );
    assert_echo(&mut late, Message::text("in the lame duck")).await;
    assert_echo(&mut old, Message::text("old one too")).await;

    let addr = s.sidecar.addr;
    wait_until(
        "the listener closes after the lame duck",
        Duration::from_secs(10),
        || refused(addr),
    )
    .await;
    let closed_after = signalled.elapsed();
    assert!(
        closed_after >= Duration::from_millis(4900),
        "the listener closed {closed_after:?} after SIGTERM, before the 5 s lame duck"
    );
    // The drain: live connections still work, the process waits for them.
    assert_echo(&mut late, Message::text("in the drain")).await;
    assert!(s.sidecar.child.try_wait().unwrap().is_none());
    for mut ws in [old, late] {
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    }
    assert_eq!(
        s.sidecar.wait(Duration::from_secs(10)).await.code(),
        Some(0)
    );
}

#[tokio::test]
async fn the_lame_duck_subcommand_starts_it_and_a_later_sigterm_does_not_shorten_it() {
    let mut s = start(&["--lame-duck", "5s", "--drain-timeout", "5s"]).await;
    let admin = s.sidecar.admin.to_string();
    let asked = Instant::now();
    let (code, stderr) = run_to_exit(
        &["lame-duck", "--admin", &admin, "--log-format", "json"],
        &[],
    )
    .await;
    assert_eq!(code, 0, "lame-duck failed: {stderr}");
    assert_eq!(readyz(&s.sidecar).await, 503, "not ready once it returned");

    // In plain mode the kubelet sends SIGTERM right after the preStop hook returns.
    s.sidecar.signal("TERM");
    let config = client_config(&[s.ca.cert_der()], &[b"http/1.1"]);
    let mut ws = ws_connect(s.sidecar.addr, "app.test", config)
        .await
        .expect("still accepting after SIGTERM: the lame duck was not shortened");
    assert_echo(&mut ws, Message::text("after SIGTERM")).await;
    assert!(asked.elapsed() < Duration::from_secs(5), "machine too slow");
    drop(ws);

    let status = s.sidecar.wait(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(4900),
        "exited {took:?} after the request, before the 5 s lame duck"
    );
    let logs = s.sidecar.logs();
    assert!(
        logs.iter().any(|l| l.contains("lame duck requested")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn a_second_signal_exits_at_once_even_after_the_lame_duck_request() {
    let mut s = start(&["--lame-duck", "60s"]).await;
    let admin = s.sidecar.admin.to_string();
    let (code, stderr) = run_to_exit(&["lame-duck", "--admin", &admin], &[]).await;
    assert_eq!(code, 0, "{stderr}");
    s.sidecar.signal("TERM");
    let sidecar = &s.sidecar;
    wait_until(
        "the first SIGTERM is seen",
        Duration::from_secs(5),
        || async move {
            sidecar
                .logs()
                .iter()
                .any(|l| l.contains("shutdown requested"))
        },
    )
    .await;
    s.sidecar.signal("TERM");
    let status = s.sidecar.wait(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(1), "the second signal exits at once");
}

#[tokio::test]
async fn the_lame_duck_subcommand_fails_with_a_message_when_nothing_answers() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let (code, stderr) = run_to_exit(&["lame-duck", "--admin", &addr], &[]).await;
    assert_ne!(code, 0);
    assert!(
        stderr.contains("cannot reach the admin endpoint") && stderr.contains(&addr),
        "{stderr}"
    );
}

/// A TLS client whose connection the sidecar ends, and which then checks that the end was
/// close_notify and a FIN: it still sends some bytes after the close_notify (a client may be
/// mid-message), closes its own side, and finds no reset on its socket once the sidecar is done.
struct EndWatcher {
    tls: tokio_rustls::client::TlsStream<TcpStream>,
}

impl EndWatcher {
    async fn connect(s: &Setup) -> EndWatcher {
        let config = client_config(&[s.ca.cert_der()], &[b"http/1.1"]);
        let mut tls = tls_connect(s.sidecar.addr, "app.test", config)
            .await
            .unwrap();
        tls.write_all(b"hello").await.unwrap();
        tls.flush().await.unwrap();
        EndWatcher { tls }
    }

    /// Waits for the sidecar's close_notify, then sends late bytes and its own close.
    async fn see_close_notify_then_answer(&mut self) {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(20), self.tls.read(&mut buf))
            .await
            .expect("the sidecar never closed the connection")
            .expect("the end must be close_notify, not an error or a reset");
        assert_eq!(n, 0, "unexpected bytes: {:?}", &buf[..n]);
        // tokio-rustls reads 0 only after a close_notify (a bare FIN is an UnexpectedEof error).
        self.tls
            .write_all(b"late bytes after the close_notify")
            .await
            .expect("the sidecar reset the connection");
        self.tls.shutdown().await.expect("close our side");
    }

    /// After the sidecar has let go of the connection: no reset arrived.
    fn assert_no_reset(&self) {
        let tcp = self.tls.get_ref().0;
        assert!(
            tcp.take_error().unwrap().is_none(),
            "the connection ended in a TCP reset"
        );
    }
}

#[tokio::test]
async fn the_drain_deadline_closes_with_close_notify_and_fin_not_a_reset() {
    install_crypto_provider();
    let ca = TestCa::new("shutdown CA");
    let dir = tempfile::tempdir().unwrap();
    write_plain_pair(dir.path(), &ca.issue(LeafSpec::new(&["app.test"])));
    let (upstream, mut accepted) = raw_upstream_tcp().await;
    let upstream = upstream.to_string();
    let sidecar = Sidecar::spawn(&[
        "--upstream",
        &upstream,
        "--cert-dir",
        dir.path().to_str().unwrap(),
        "--drain-timeout",
        "1s",
    ])
    .await;
    let mut s = Setup {
        sidecar,
        ca,
        _app: EchoServer::start_tcp().await,
        _dir: dir,
    };
    let mut client = EndWatcher::connect(&s).await;
    let mut app = accepted.recv().await.unwrap();
    let mut hello = [0u8; 5];
    app.read_exact(&mut hello).await.unwrap();

    s.sidecar.signal("TERM");
    client.see_close_notify_then_answer().await;
    assert_eq!(
        s.sidecar.wait(Duration::from_secs(15)).await.code(),
        Some(0)
    );
    client.assert_no_reset();
}

async fn upstream_exit_is_passed_on_without_a_reset(abort: bool) {
    install_crypto_provider();
    let ca = TestCa::new("shutdown CA");
    let dir = tempfile::tempdir().unwrap();
    write_plain_pair(dir.path(), &ca.issue(LeafSpec::new(&["app.test"])));
    let (upstream, mut accepted) = raw_upstream_tcp().await;
    let upstream = upstream.to_string();
    let sidecar = Sidecar::spawn(&[
        "--upstream",
        &upstream,
        "--cert-dir",
        dir.path().to_str().unwrap(),
    ])
    .await;
    let s = Setup {
        sidecar,
        ca,
        _app: EchoServer::start_tcp().await,
        _dir: dir,
    };
    let mut client = EndWatcher::connect(&s).await;
    let mut app = accepted.recv().await.unwrap();
    if abort {
        // The app dies with our bytes unread: its kernel resets the upstream connection.
        app.readable().await.unwrap();
    } else {
        let mut hello = [0u8; 5];
        app.read_exact(&mut hello).await.unwrap();
    }
    drop(app);

    client.see_close_notify_then_answer().await;
    let admin = s.sidecar.admin;
    wait_until(
        "the sidecar lets go of the connection",
        Duration::from_secs(10),
        || async move {
            http_get(admin, "/metrics")
                .await
                .is_ok_and(|(_, body)| body.contains("wss_sidecar_connections_open 0"))
        },
    )
    .await;
    client.assert_no_reset();
}

#[tokio::test]
async fn an_app_that_exits_is_passed_on_as_close_notify_and_fin_not_a_reset() {
    upstream_exit_is_passed_on_without_a_reset(false).await;
}

#[tokio::test]
async fn an_app_that_dies_with_bytes_unread_is_passed_on_as_close_notify_and_fin_not_a_reset() {
    upstream_exit_is_passed_on_without_a_reset(true).await;
}

/// The injector's own rollouts: with `failurePolicy: Fail` a refused admission fails a pod
/// creation, so in its lame duck it is not ready yet still answers admissions.
#[tokio::test]
async fn the_injector_keeps_answering_admissions_in_its_lame_duck() {
    use crate::support::injector::{SERVICE_NAME, admission_review, https_request, injector_args};
    install_crypto_provider();
    let ca = TestCa::new("injector CA");
    let dir = tempfile::tempdir().unwrap();
    write_plain_pair(dir.path(), &ca.issue(LeafSpec::new(&[SERVICE_NAME])));
    let dir_flag = dir.path().to_str().unwrap().to_string();
    let args = injector_args(&["--cert-dir", &dir_flag, "--lame-duck", "5s"]);
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admin_addr) = (https.local_addr().unwrap(), admin.local_addr().unwrap());
    let listeners = wss_sidecar::injector::Listeners {
        https,
        admin: Some(admin),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(wss_sidecar::injector::run(
        args.into_config().unwrap(),
        listeners,
        async move {
            let _ = stopped.await;
        },
    ));
    wait_until(
        "the injector is ready",
        Duration::from_secs(10),
        || async move {
            http_get(admin_addr, "/readyz")
                .await
                .is_ok_and(|(status, _)| status == 200)
        },
    )
    .await;

    let client = client_config(&[ca.cert_der()], &[b"http/1.1"]);
    let mut kept = crate::support::tls_connect(addr, SERVICE_NAME, client.clone())
        .await
        .expect("TLS connect to the injector");
    let head = kept_alive_healthz(&mut kept).await;
    assert!(!head.contains("connection: close"), "{head}");

    let stopped_at = Instant::now();
    stop.send(()).unwrap();
    wait_until("/readyz turns 503", Duration::from_secs(2), || async move {
        http_get(admin_addr, "/readyz")
            .await
            .is_ok_and(|(status, _)| status == 503)
    })
    .await;
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "echo-", "namespace": "apps",
                     "labels": {"wss-sidecar.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/echo:1.0"}]}
    });
    let review = serde_json::to_vec(&admission_review("0b1c", "apps", &pod)).unwrap();
    let (status, body) = https_request(addr, client, "POST", "/mutate", &review).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("\"allowed\":true"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // A kept-alive connection is told to close, and is closed, long before the lame duck ends:
    // the API server's next review goes to a replica that is not stopping.
    let head = kept_alive_healthz(&mut kept).await;
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(2), kept.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the kept-alive connection stayed open");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(5),
        "machine too slow"
    );

    let result = tokio::time::timeout(Duration::from_secs(20), task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    let took = stopped_at.elapsed();
    assert!(
        took >= Duration::from_millis(4900),
        "the injector stopped {took:?} after the signal, before its 5 s lame duck"
    );
    wait_until("the webhook port is closed", Duration::from_secs(2), || {
        refused(addr)
    })
    .await;
}

/// `GET /healthz` on a kept-alive connection; returns the response head, lower-cased, once the
/// whole response (head and `Content-Length` body) is read.
async fn kept_alive_healthz(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> String {
    let request = "GET /healthz HTTP/1.1\r\nHost: injector\r\n\r\n";
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(n > 0, "closed before the answer: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a content-length");
        if raw.len() >= split + 4 + length {
            return head;
        }
    }
}
