//! Fuzzes the HTTP exchange follower: any bytes either way, in runs; it must never panic, never
//! count more bytes than it was given, and see the same whether a run comes whole or a byte at
//! a time (except that a whole run may show a broken head sooner).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/forward/http_exchange.rs"]
mod http_exchange;

use http_exchange::{Exchange, Stage};

/// Feeds `bytes` from the app or the client; checks the count against the input.
fn send(exchange: &mut Exchange, app: bool, bytes: &[u8]) -> usize {
    let n = if app {
        exchange.app_bytes(bytes)
    } else {
        exchange.client_bytes(bytes)
    };
    assert!(n <= bytes.len(), "{n} of {} bytes", bytes.len());
    n
}

fuzz_target!(|data: &[u8]| {
    let mut whole = Exchange::new();
    let mut bytewise = Exchange::new();
    let mut rest = data;
    // Each run: a header byte (top bit: the app sends, else the client; the rest: the run's
    // length less one), then the run.
    while let Some((&header, tail)) = rest.split_first() {
        let app = header & 0x80 != 0;
        let len = usize::from(header & 0x7f) + 1;
        let (run, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;

        let n = send(&mut whole, app, run);
        let m: usize = run.chunks(1).map(|b| send(&mut bytewise, app, b)).sum();

        for ex in [&whole, &bytewise] {
            assert!(
                !ex.idle() || ex.stage() == Stage::Http,
                "idle when not HTTP"
            );
        }
        match (whole.stage(), bytewise.stage()) {
            (Stage::Lost, Stage::Lost) => {}
            // A head found broken in place, still being buffered byte by byte: never idle,
            // and never an upgrade.
            (Stage::Lost, other) => {
                assert_eq!(other, Stage::Http);
                assert!(!bytewise.idle());
            }
            (other, Stage::Lost) => panic!("lost byte by byte only (whole: {other:?})"),
            (a, b) => {
                assert_eq!(a, b, "stage");
                assert_eq!(whole.idle(), bytewise.idle(), "idle");
                assert_eq!(n, m, "HTTP bytes");
            }
        }
    }
});
