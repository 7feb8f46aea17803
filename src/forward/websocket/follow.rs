//! One followed connection: the HTTP exchange until a `101`, then the frames both ways, and
//! the closes and Pings the sidecar starts itself.
//!
//! A close we start (drain slot, maximum age) runs both closing handshakes RFC 6455 section
//! 7 asks for, one per side:
//! - toward the app, as a client would: a masked Close at the client's next message
//!   boundary; nothing the client sends is passed on after it;
//! - toward the client: the app answers our Close once its current message is out, and its
//!   answer goes to the client with our code instead (so every message the app sent before
//!   it arrives whole); an app that does not answer within `--ws-close-timeout` is overtaken
//!   by our own Close at its next message boundary. Nothing of the app's follows a Close.
//! - once the client has answered (or after the timeout) we close the TCP connection first,
//!   as the server should (section 7.1.1).
//!
//! A connection that never upgraded is closed between two requests; one whose bytes are not
//! understood (another upgrade, broken framing) is cut at that time instead.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::super::CloseReason;
use super::super::http_exchange::{Exchange, Stage};
use super::super::watch::{Dir, Filtered, Watch};
use super::super::ws_frames::{self, Control, Event, Frames};
use super::drain::OpenGuard;
use super::{PING_TIMEOUT_CODE, Settings, WebSockets};

/// Why we close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Drain,
    MaxAge,
    PingTimeout,
}

impl Why {
    fn reason(self) -> CloseReason {
        match self {
            Why::Drain => CloseReason::DrainCloseFrame,
            Why::MaxAge => CloseReason::MaxAge,
            Why::PingTimeout => CloseReason::PingTimeout,
        }
    }
}

/// A close we started, on a WebSocket.
#[derive(Debug)]
struct Closing {
    why: Why,
    started: Instant,
    /// Our Close went to the app (or the client's own, which serves as ours).
    app_close_sent: bool,
    /// When a Close went to the client.
    client_close_sent: Option<Instant>,
    /// The client's Close arrived.
    client_answered: bool,
    /// The app's Close arrived.
    app_answered: bool,
    /// The client is told (false for a client that stopped answering: it would not hear).
    to_client: bool,
}

/// Pings to the client.
#[derive(Debug)]
struct PingState {
    /// When the next Ping is due.
    next: Instant,
    /// A Ping should go out at the next frame boundary.
    due: bool,
    /// The payload of our Pings: a Pong carrying it answers us and goes no further.
    token: [u8; 8],
    /// Some Pong must arrive by then.
    deadline: Option<Instant>,
}

/// Everything a followed connection keeps, on the heap.
struct State {
    exchange: Exchange,
    /// Our own view: `Lost` also when the frames stop making sense.
    stage: Stage,
    up: Frames,
    down: Frames,
    /// A scheduled close: a drain slot or the maximum age.
    close_at: Option<(Instant, Why)>,
    closing: Option<Closing>,
    /// A side sent a Close of its own before we started one: a close is under way.
    peers_closing: bool,
    /// Decided: the connection ends once both directions have written what they hold.
    finished: Option<Why>,
    drain: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    ping: Option<PingState>,
    rewake: bool,
}

/// The watch of a followed connection.
pub struct Follow<'a> {
    ws: &'a WebSockets,
    state: Box<State>,
    _open: OpenGuard<'a>,
}

impl<'a> Follow<'a> {
    /// Follows a connection that started at `started`. `head`: the client's first request
    /// head when it was already sent upstream (`--forwarded-headers`), for the exchange to see.
    pub fn new(ws: &'a WebSockets, started: Instant, head: &[u8]) -> Self {
        let settings = &ws.settings;
        let close_at = settings.max_age.map(|max| {
            let jitter = u64::try_from(max.jitter.as_nanos()).unwrap_or(u64::MAX);
            let extra = Duration::from_nanos(rand::random_range(0..=jitter));
            (started + max.age + extra, Why::MaxAge)
        });
        let ping = settings.pings.map(|pings| PingState {
            next: Instant::now() + pings.interval,
            due: false,
            token: rand::random(),
            deadline: None,
        });
        let mut exchange = Exchange::new();
        let taken = exchange.client_bytes(head);
        let mut up = Frames::new();
        if let Some(rest) = head.get(taken..).filter(|rest| !rest.is_empty()) {
            follow_only(&mut up, rest);
        }
        let state = State {
            stage: exchange.stage(),
            exchange,
            up,
            down: Frames::new(),
            close_at,
            closing: None,
            peers_closing: false,
            finished: None,
            drain: settings.drain_spread.map(|_| Box::pin(ws.drain.began())),
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            timer_at: None,
            ping,
            rewake: false,
        };
        Self {
            ws,
            state: Box::new(state),
            _open: ws.drain.enter(),
        }
    }
}

/// Follows `data` in `frames` without passing anything anywhere (bytes whose fate the exchange
/// decides later).
fn follow_only(frames: &mut Frames, data: &[u8]) {
    let mut pos = 0;
    while let Some(rest) = data.get(pos..).filter(|rest| !rest.is_empty()) {
        let n = match frames.next(rest) {
            Event::Pass(n) | Event::Held(n) | Event::Control(n) => n,
        };
        if n == 0 || frames.lost() {
            break;
        }
        pos += n;
    }
}

/// What a filter writes: `data` as it is while nothing changes, else a copy being built.
struct Output<'d> {
    data: &'d [u8],
    /// `data[..passed]` passes unchanged so far (while `copy` is `None`).
    passed: usize,
    copy: Option<Vec<u8>>,
}

impl<'d> Output<'d> {
    fn new(data: &'d [u8]) -> Self {
        Self {
            data,
            passed: 0,
            copy: None,
        }
    }

    fn copy(&mut self) -> &mut Vec<u8> {
        let (data, passed) = (self.data, self.passed);
        self.copy.get_or_insert_with(|| {
            let mut copy = Vec::with_capacity(data.len() + ws_frames::MAX_CONTROL_FRAME);
            copy.extend_from_slice(data.get(..passed).unwrap_or_default());
            copy
        })
    }

    /// `data[from..to]` goes out.
    fn pass(&mut self, from: usize, to: usize) {
        if self.copy.is_none() && from == self.passed {
            self.passed = to;
            return;
        }
        let bytes = self.data.get(from..to).unwrap_or_default();
        self.copy().extend_from_slice(bytes);
    }

    /// `bytes` go out here.
    fn insert(&mut self, bytes: &[u8]) {
        self.copy().extend_from_slice(bytes);
    }

    fn into_filtered(self) -> Filtered {
        match self.copy {
            None if self.passed == self.data.len() => Filtered::Unchanged,
            None => Filtered::Replaced(self.data.get(..self.passed).unwrap_or_default().to_vec()),
            Some(copy) => Filtered::Replaced(copy),
        }
    }
}

impl State {
    /// Nothing of `dir` goes on: our Close went that way.
    fn dropping(&self, dir: Dir) -> bool {
        self.closing.as_ref().is_some_and(|c| match dir {
            Dir::ClientToApp => c.app_close_sent,
            Dir::AppToClient => c.client_close_sent.is_some(),
        })
    }

    /// Starts a close of ours, unless one is under way.
    fn start_closing(&mut self, why: Why, now: Instant) {
        if self.closing.is_some() || self.finished.is_some() {
            return;
        }
        match self.stage {
            Stage::Http if self.exchange.idle() => self.finished = Some(why),
            Stage::Http | Stage::WebSocket if !self.peers_closing => {
                self.closing = Some(Closing {
                    why,
                    started: now,
                    app_close_sent: false,
                    client_close_sent: None,
                    client_answered: false,
                    app_answered: false,
                    to_client: why != Why::PingTimeout,
                });
            }
            // The peers are closing on their own: the drain deadline bounds them.
            Stage::Http | Stage::WebSocket => {}
            // Nothing we could close gracefully: cut it at this time.
            Stage::Lost => self.finished = Some(why),
        }
    }

    /// Decides whether the close is complete.
    fn check_finished(&mut self) {
        let Some(closing) = &self.closing else {
            return;
        };
        let done = match self.stage {
            Stage::Http => self.exchange.idle(),
            Stage::WebSocket if closing.to_client => {
                closing.client_answered && closing.app_answered
            }
            Stage::WebSocket => closing.app_close_sent,
            Stage::Lost => true,
        };
        if done && self.finished.is_none() {
            self.finished = Some(closing.why);
        }
    }
}

/// Our Close toward the app (masked, as a client sends it).
fn app_close(settings: &Settings, why: Why) -> Vec<u8> {
    let mask = Some(rand::random());
    match why {
        Why::PingTimeout => ws_frames::close_frame(PING_TIMEOUT_CODE, "ping timeout", mask),
        Why::Drain | Why::MaxAge => {
            ws_frames::close_frame(settings.close_code, &settings.close_reason, mask)
        }
    }
}

/// Our Close toward the client.
fn client_close(settings: &Settings) -> Vec<u8> {
    ws_frames::close_frame(settings.close_code, &settings.close_reason, None)
}

impl Follow<'_> {
    /// The frames we owe `dir` at this point of its stream, if any: a Close once it stands at
    /// a message boundary (toward the app, after `--ws-close-timeout` a frame boundary will
    /// do), a Ping at a frame boundary.
    fn owed(&mut self, dir: Dir, now: &mut Option<Instant>) -> Option<Vec<u8>> {
        let timeout = self.ws.settings.close_timeout;
        let s = &mut *self.state;
        if s.stage != Stage::WebSocket || s.finished.is_some() {
            return None;
        }
        match dir {
            Dir::ClientToApp => {
                let closing = s.closing.as_mut()?;
                if closing.app_close_sent {
                    return None;
                }
                let at_boundary = s.up.at_message_boundary()
                    || (s.up.at_frame_boundary()
                        && *now.get_or_insert_with(Instant::now) >= closing.started + timeout);
                if !at_boundary {
                    return None;
                }
                closing.app_close_sent = true;
                s.rewake = true;
                Some(app_close(&self.ws.settings, closing.why))
            }
            Dir::AppToClient => {
                if let Some(closing) = s.closing.as_mut()
                    && closing.to_client
                    && closing.client_close_sent.is_none()
                    && s.down.at_message_boundary()
                {
                    let now = *now.get_or_insert_with(Instant::now);
                    if now >= closing.started + timeout {
                        // The app did not answer in time: our own Close overtakes it.
                        closing.client_close_sent = Some(now);
                        s.rewake = true;
                        return Some(client_close(&self.ws.settings));
                    }
                }
                let blocked = !s.down.at_frame_boundary() || s.dropping(Dir::AppToClient);
                let ping = s.ping.as_mut()?;
                if !ping.due || blocked {
                    return None;
                }
                ping.due = false;
                if ping.deadline.is_none() {
                    let timeout = self.ws.settings.pings.map_or(timeout, |p| p.timeout);
                    ping.deadline = Some(*now.get_or_insert_with(Instant::now) + timeout);
                    s.rewake = true;
                }
                Some(ws_frames::ping_frame(&ping.token, None))
            }
        }
    }

    /// Follows the frames of `data` (from `from` on) in `dir`, into `out`.
    fn frames(&mut self, dir: Dir, data: &[u8], from: usize, out: &mut Output<'_>) {
        let mut now = None;
        let mut pos = from;
        while let Some(rest) = data.get(pos..).filter(|rest| !rest.is_empty()) {
            let s = &mut *self.state;
            let frames = match dir {
                Dir::ClientToApp => &mut s.up,
                Dir::AppToClient => &mut s.down,
            };
            let event = frames.next(rest);
            if frames.lost() {
                // Not WebSocket framing after all: pass the rest, stop following.
                // The start of the frame that showed it was taken in earlier calls.
                let held = frames.held().to_vec();
                s.stage = Stage::Lost;
                if !s.dropping(dir) {
                    if !held.is_empty() {
                        out.insert(&held);
                    }
                    out.pass(pos, data.len());
                }
                if s.closing.is_some() {
                    s.finished = s.closing.as_ref().map(|c| c.why);
                }
                return;
            }
            match event {
                Event::Pass(0) | Event::Held(0) | Event::Control(0) => return,
                Event::Pass(n) => {
                    if !s.dropping(dir) {
                        out.pass(pos, pos + n);
                    }
                    pos += n;
                }
                Event::Held(n) => pos += n,
                Event::Control(n) => {
                    pos += n;
                    self.control(dir, out, &mut now);
                }
            }
            if let Some(bytes) = self.owed(dir, &mut now) {
                out.insert(&bytes);
            }
        }
    }

    /// Decides what becomes of the control frame just completed in `dir`.
    fn control(&mut self, dir: Dir, out: &mut Output<'_>, now: &mut Option<Instant>) {
        let ws = self.ws;
        let s = &mut *self.state;
        let dropping = s.dropping(dir);
        let frames = match dir {
            Dir::ClientToApp => &s.up,
            Dir::AppToClient => &s.down,
        };
        let Some(frame) = frames.control() else {
            return;
        };
        let mut forward = !dropping;
        match (frame.kind, dir) {
            (Control::Close, _) => {
                let from = match dir {
                    Dir::ClientToApp => "client",
                    Dir::AppToClient => "app",
                };
                ws.metrics
                    .websocket
                    .count_close(from, ws_frames::close_code(frame.payload));
                match (s.closing.as_mut(), dir) {
                    (None, _) => s.peers_closing = true,
                    (Some(closing), Dir::ClientToApp) => {
                        // The client closes too: its Close serves as ours toward the app.
                        closing.client_answered = true;
                        closing.app_close_sent = true;
                    }
                    (Some(closing), Dir::AppToClient) => {
                        closing.app_answered = true;
                        forward = false;
                        if closing.to_client && closing.client_close_sent.is_none() {
                            // The app's answer, with our code: the client learns why.
                            closing.client_close_sent = Some(*now.get_or_insert_with(Instant::now));
                            out.insert(&client_close(&ws.settings));
                        }
                    }
                }
                s.rewake = true;
            }
            (Control::Pong, Dir::ClientToApp) => {
                if let Some(ping) = s.ping.as_mut() {
                    // Any Pong shows the client is there; one answering ours stops here.
                    ping.deadline = None;
                    if frame.payload == ping.token.as_slice() {
                        forward = false;
                    }
                }
            }
            (Control::Ping | Control::Pong, _) => {}
        }
        if forward {
            out.insert(frame.bytes);
        }
    }
}

impl Watch for Follow<'_> {
    fn filter(&mut self, dir: Dir, data: &[u8]) -> Filtered {
        let mut out = Output::new(data);
        match (self.state.stage, dir) {
            (Stage::Lost, _) => return Filtered::Unchanged,
            (Stage::Http, Dir::ClientToApp) => {
                let s = &mut *self.state;
                let taken = s.exchange.client_bytes(data);
                if let Some(rest) = data.get(taken..).filter(|rest| !rest.is_empty()) {
                    follow_only(&mut s.up, rest);
                }
                if s.exchange.stage() == Stage::Lost {
                    s.stage = Stage::Lost;
                }
                out.pass(0, data.len());
            }
            (Stage::Http, Dir::AppToClient) => {
                let s = &mut *self.state;
                let taken = s.exchange.app_bytes(data);
                out.pass(0, taken.min(data.len()));
                match s.exchange.stage() {
                    Stage::WebSocket => {
                        s.stage = Stage::WebSocket;
                        s.rewake = true;
                        self.frames(dir, data, taken, &mut out);
                    }
                    Stage::Lost => {
                        s.stage = Stage::Lost;
                        out.pass(taken, data.len());
                    }
                    Stage::Http => out.pass(taken, data.len()),
                }
            }
            (Stage::WebSocket, _) => self.frames(dir, data, 0, &mut out),
        }
        self.state.check_finished();
        out.into_filtered()
    }

    fn inject(&mut self, dir: Dir) -> Option<Vec<u8>> {
        let s = &self.state;
        let ping_due = s.ping.as_ref().is_some_and(|p| p.due);
        if s.closing.is_none() && !ping_due {
            return None;
        }
        let bytes = self.owed(dir, &mut None)?;
        self.state.check_finished();
        Some(bytes)
    }

    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let timeout = self.ws.settings.close_timeout;
        let pings = self.ws.settings.pings;
        loop {
            let s = &mut *self.state;
            if let Some(drain) = s.drain.as_mut()
                && drain.as_mut().poll(cx).is_ready()
            {
                s.drain = None;
                let at = self.ws.drain.ticket();
                if s.close_at.is_none_or(|(due, _)| at < due) {
                    s.close_at = Some((at, Why::Drain));
                }
            }
            let now = Instant::now();
            if let Some((at, why)) = s.close_at
                && at <= now
            {
                s.close_at = None;
                s.start_closing(why, now);
            }
            if let (Some(ping), Some(pings)) = (s.ping.as_mut(), pings) {
                if ping.next <= now {
                    ping.next = now + pings.interval;
                    ping.due = s.stage == Stage::WebSocket && s.closing.is_none();
                }
                if ping.deadline.is_some_and(|d| d <= now) {
                    ping.deadline = None;
                    s.start_closing(Why::PingTimeout, now);
                }
            }
            s.check_finished();
            let mut next = [s.close_at.map(|(at, _)| at), None, None, None, None];
            if let Some(ping) = &s.ping {
                next[1] = Some(ping.next);
                next[2] = ping.deadline;
            }
            if let Some(closing) = &s.closing
                && s.stage != Stage::Http
            {
                // A WebSocket close is bounded: the client's answer, and the whole of it.
                let hard = closing.started + 3 * timeout;
                let answer = closing.client_close_sent.map(|sent| sent + timeout);
                if now >= hard || answer.is_some_and(|at| now >= at) {
                    return Poll::Ready(closing.why.reason());
                }
                let boundary = closing.started + timeout;
                next[3] = Some(if now < boundary { boundary } else { hard });
                next[4] = answer;
            }
            let Some(at) = next.into_iter().flatten().min() else {
                return Poll::Pending;
            };
            if s.timer_at != Some(at) {
                s.timer.as_mut().reset(at);
                s.timer_at = Some(at);
            }
            if s.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            s.timer_at = None;
        }
    }

    fn finished(&self) -> Option<CloseReason> {
        self.state.finished.map(Why::reason)
    }

    fn wants_repoll(&mut self) -> bool {
        std::mem::take(&mut self.state.rewake)
    }

    fn outcome(&self, seen: CloseReason) -> CloseReason {
        let s = &self.state;
        match s.finished.or(s.closing.as_ref().map(|c| c.why)) {
            Some(why) => why.reason(),
            None => seen,
        }
    }
}
