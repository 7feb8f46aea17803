//! SIGTERM drains: readiness drops at once, new connections are refused, live ones finish.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
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
