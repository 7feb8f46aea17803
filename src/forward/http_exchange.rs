//! Follows the HTTP/1.1 messages of one forwarded connection, both ways, without copying or
//! changing a byte: whether it upgraded to WebSocket (and at which byte), and whether it stands
//! between two requests, so a shutdown closes a keep-alive connection without cutting a message.
//!
//! The framing is RFC 9112's (sections cited below). The endpoints decide what their bytes
//! mean; this follower only keeps up with them, so whatever it cannot frame with certainty
//! makes it stop following ([`Stage::Lost`]) rather than guess: a lost connection is never
//! called idle, and is cut at the end of the drain instead of between two requests.
//!
//! Like `request_head.rs`, this file uses only `std` and `httparse`, so the fuzz target in
//! `fuzz/` compiles it by path.

/// Longest head (request or response) followed; a longer one is [`Stage::Lost`]. Servers
/// refuse far less (nginx 8 KiB a line, Node 16 KiB a head), so a head this long is one the
/// app refuses anyway, and the buffer a split head needs stays bounded.
pub const MAX_HEAD: usize = 64 * 1024;

/// Most header lines a head may carry: above `request_head.rs`'s 100, since the first request
/// reaches us with the sidecar's own headers added.
const MAX_HEADERS: usize = 128;

/// Most requests waiting for their responses at once (pipelined, RFC 9112 section 9.3.2):
/// one bit each of [`Exchange::heads`]. No client pipelines that deep; past it, `Lost`.
const MAX_WAITING: u8 = 64;

/// How far the exchange has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Requests and responses, followed.
    Http,
    /// A `101 Switching Protocols` answered a request with `Upgrade: websocket`: WebSocket
    /// frames follow, both ways.
    WebSocket,
    /// Something this follower cannot frame (a parse error, another upgrade such as h2c,
    /// CONNECT, a head over the limit): it stops following; the connection is never "idle"
    /// again.
    Lost,
}

/// One connection's requests and responses.
///
/// Idle, it holds no heap memory: a head split across reads is buffered only until it
/// completes, and the waiting requests are a count and a bit mask.
#[derive(Debug)]
pub struct Exchange {
    stage: Stage,
    /// Where the client's bytes stand.
    client: Msg,
    /// Where the app's bytes stand.
    app: Msg,
    /// Requests whose head is complete and whose final response has not begun, at most
    /// [`MAX_WAITING`].
    waiting: u8,
    /// Bit `i` set: the `i`-th oldest waiting request is a HEAD, so its response has no body.
    heads: u64,
    /// The newest waiting request asks to switch protocols: nothing the client sends after it
    /// is HTTP unless the response refuses.
    switch: Option<Switch>,
}

/// A request after which the connection may stop being HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switch {
    /// `Upgrade: websocket` with `Connection: upgrade` (RFC 6455 section 4.1).
    WebSocket,
    /// A tunnel once answered 2xx (RFC 9110 section 9.3.6).
    Connect,
}

/// Where one direction's bytes stand.
#[derive(Debug)]
enum Msg {
    /// Between two messages.
    Start,
    /// A head split across calls: its bytes so far, never more than [`MAX_HEAD`].
    Head(Vec<u8>),
    /// A message body.
    Body(Body),
    /// Client only: after a request that asks to switch protocols (and its body), until its
    /// response decides; `true` once bytes came after it.
    Held(bool),
    /// App only: a body that ends when the app closes (RFC 9112 section 6.3, rule 8).
    UntilClose,
}

/// A body whose end its head announced (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// `Content-Length`: this many bytes to go, never 0.
    Length(u64),
    Chunked(Chunked),
}

/// A chunked body (RFC 9112 section 7.1), followed a byte at a time except for chunk data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunked {
    at: ChunkAt,
    /// The chunk size read so far, then the chunk data still to come.
    size: u64,
    /// Bytes of the current chunk-size line, or of the whole trailer section: they are
    /// bounded like a head, so a peer cannot keep us parsing one line forever.
    line: u32,
}

/// The grammar position inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkAt {
    /// Before the chunk size's first digit.
    SizeStart,
    Size,
    /// Whitespace after the size (the `BWS` before a `;` in section 7.1.1).
    SizeSpace,
    /// Chunk extensions: not interpreted, only skipped to the line's end.
    Ext,
    /// The `LF` ending the chunk-size line.
    SizeLf,
    Data,
    /// The `CRLF` after the chunk data.
    DataCr,
    DataLf,
    /// The start of a trailer line, or of the empty line ending the body (section 7.1.2).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    /// The `LF` of the final empty line.
    EndLf,
}

/// Framing this follower cannot follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unframed;

/// What one step along a direction's bytes did.
enum Step {
    /// Took this many bytes (at least one) as HTTP.
    Took(usize),
    /// The rest is not HTTP (held after a request that asks to switch protocols).
    Stop,
    /// A `101` head of this many bytes switched the connection to WebSocket.
    Switched(usize),
    Lost,
}

/// A head parsed by [`feed_head`].
enum Fed<T> {
    /// Complete: this many bytes of the new data were the end of the head.
    Done(usize, T),
    /// All the new data belongs to a head still incomplete.
    More,
    Invalid,
}

/// What `parse` made of the bytes of a head.
enum Parsed<T> {
    Complete(usize, T),
    Partial,
    Invalid,
}

/// What a request head says.
struct RequestHead {
    head_method: bool,
    switch: Option<Switch>,
    body: Option<Body>,
}

/// What a response head says; its body depends on the request it answers too.
struct ResponseHead {
    code: u16,
    framing: Framing,
}

/// The body framing headers of a head (RFC 9112 section 6).
struct Framing {
    /// `Transfer-Encoding` is present: whether its last coding is `chunked`.
    chunked: Option<bool>,
    /// `Content-Length`, valid.
    length: Option<u64>,
}

impl Default for Exchange {
    fn default() -> Self {
        Self::new()
    }
}

impl Exchange {
    pub fn new() -> Self {
        Self {
            stage: Stage::Http,
            client: Msg::Start,
            app: Msg::Start,
            waiting: 0,
            heads: 0,
            switch: None,
        }
    }

    /// Bytes the client sent (in order, every byte exactly once). Returns how many of them are
    /// HTTP; when less than `data.len()`, the rest follows an upgrade request's head (bytes
    /// the client sent after asking to upgrade; they belong to the WebSocket stream if the
    /// response is 101). Once `WebSocket`, none are HTTP; once `Lost`, all are counted
    /// (nothing more is known of them, and none belong to a WebSocket).
    ///
    /// A request with a body (allowed with an upgrade, if unusual) is HTTP up to the body's
    /// end: a client switches only after its whole request (RFC 9110 section 7.8). The same
    /// holds after a CONNECT request, whose tunnel may start.
    pub fn client_bytes(&mut self, data: &[u8]) -> usize {
        match self.stage {
            Stage::WebSocket => return 0,
            Stage::Lost => return data.len(),
            Stage::Http => {}
        }
        let mut pos = 0;
        while let Some(rest) = data.get(pos..).filter(|rest| !rest.is_empty()) {
            match self.client_step(rest) {
                Step::Took(n) if n > 0 => pos += n.min(rest.len()),
                Step::Stop => return pos,
                // The client never switches by itself; no progress would loop forever.
                Step::Took(_) | Step::Switched(_) | Step::Lost => {
                    self.lose();
                    return data.len();
                }
            }
        }
        pos
    }

    /// Bytes the app sent. Returns how many of them are HTTP; when less than `data.len()`
    /// the stage has become `WebSocket` and the rest are WebSocket frames. Once `WebSocket`,
    /// none are HTTP; once `Lost`, all are counted.
    pub fn app_bytes(&mut self, data: &[u8]) -> usize {
        match self.stage {
            Stage::WebSocket => return 0,
            Stage::Lost => return data.len(),
            Stage::Http => {}
        }
        let mut pos = 0;
        while let Some(rest) = data.get(pos..).filter(|rest| !rest.is_empty()) {
            match self.app_step(rest) {
                Step::Took(n) if n > 0 => pos += n.min(rest.len()),
                Step::Switched(n) => {
                    self.stage = Stage::WebSocket;
                    // Neither direction holds anything HTTP any more.
                    self.client = Msg::Start;
                    self.app = Msg::Start;
                    return pos + n.min(rest.len());
                }
                Step::Took(_) | Step::Stop | Step::Lost => {
                    self.lose();
                    return data.len();
                }
            }
        }
        pos
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Between requests: every request head seen has been answered by a complete final
    /// response, no request (head or body) is partly received, and no response is partly
    /// sent. A fresh connection with no bytes yet is idle.
    pub fn idle(&self) -> bool {
        self.stage == Stage::Http
            && self.waiting == 0
            && matches!(self.client, Msg::Start)
            && matches!(self.app, Msg::Start)
    }

    /// Stops following, and lets go of any buffer.
    fn lose(&mut self) {
        self.stage = Stage::Lost;
        self.client = Msg::Start;
        self.app = Msg::Start;
    }

    fn client_step(&mut self, rest: &[u8]) -> Step {
        match std::mem::replace(&mut self.client, Msg::Start) {
            Msg::Start => match empty_lines(rest) {
                0 => self.request_head(Vec::new(), rest),
                n => Step::Took(n),
            },
            Msg::Head(buf) => self.request_head(buf, rest),
            Msg::Body(mut body) => match body.follow(rest) {
                Err(Unframed) => Step::Lost,
                Ok((n, false)) => {
                    self.client = Msg::Body(body);
                    Step::Took(n)
                }
                Ok((n, true)) => {
                    self.client = self.after_request();
                    Step::Took(n)
                }
            },
            Msg::Held(_) => {
                // These bytes make a refusal ambiguous: were they meant as HTTP or not?
                self.client = Msg::Held(true);
                Step::Stop
            }
            Msg::UntilClose => Step::Lost,
        }
    }

    /// Where the client stands after a whole request.
    fn after_request(&self) -> Msg {
        match self.switch {
            Some(_) => Msg::Held(false),
            None => Msg::Start,
        }
    }

    fn request_head(&mut self, mut buf: Vec<u8>, rest: &[u8]) -> Step {
        let (used, head) = match feed_head(&mut buf, rest, parse_request) {
            Fed::Done(used, head) => (used, head),
            Fed::More => {
                self.client = Msg::Head(buf);
                return Step::Took(rest.len());
            }
            Fed::Invalid => return Step::Lost,
        };
        if self.waiting >= MAX_WAITING {
            return Step::Lost;
        }
        self.heads |= u64::from(head.head_method) << self.waiting;
        self.waiting += 1;
        self.switch = head.switch;
        self.client = match head.body {
            Some(body) => Msg::Body(body),
            None => self.after_request(),
        };
        Step::Took(used)
    }

    fn app_step(&mut self, rest: &[u8]) -> Step {
        match std::mem::replace(&mut self.app, Msg::Start) {
            Msg::Start => match empty_lines(rest) {
                // A response no request asked for: nothing to frame it by (an early `400` or
                // `408` the app sends before closing, say).
                0 if self.waiting == 0 => Step::Lost,
                0 => self.response_head(Vec::new(), rest),
                n => Step::Took(n),
            },
            Msg::Head(buf) => self.response_head(buf, rest),
            Msg::Body(mut body) => match body.follow(rest) {
                Err(Unframed) => Step::Lost,
                Ok((n, done)) => {
                    if !done {
                        self.app = Msg::Body(body);
                    }
                    Step::Took(n)
                }
            },
            Msg::UntilClose => {
                self.app = Msg::UntilClose;
                Step::Took(rest.len())
            }
            Msg::Held(_) => Step::Lost,
        }
    }

    fn response_head(&mut self, mut buf: Vec<u8>, rest: &[u8]) -> Step {
        let (used, head) = match feed_head(&mut buf, rest, parse_response) {
            Fed::Done(used, head) => (used, head),
            Fed::More => {
                self.app = Msg::Head(buf);
                return Step::Took(rest.len());
            }
            Fed::Invalid => return Step::Lost,
        };
        // The oldest waiting request is the one that asked to switch.
        let switching = if self.waiting == 1 { self.switch } else { None };
        match head.code {
            // Not a status code (RFC 9110 section 15).
            0..=99 => return Step::Lost,
            // Only a WebSocket upgrade whose request is whole switches to frames we know.
            101 => {
                return if switching == Some(Switch::WebSocket)
                    && matches!(self.client, Msg::Held(_))
                {
                    Step::Switched(used)
                } else {
                    Step::Lost
                };
            }
            // Interim: no body, and the request still waits (RFC 9110 section 15.2).
            100..=199 => return Step::Took(used),
            _ => {}
        }
        if let Some(switch) = switching {
            if switch == Switch::Connect && (200..300).contains(&head.code) {
                return Step::Lost;
            }
            // Refused: the connection stays HTTP/1.1 (RFC 9110 section 7.8). Unless the
            // client already sent more: whether the app took that as a next request or
            // dropped it as the start of the new protocol is not for us to know.
            self.switch = None;
            match self.client {
                Msg::Held(true) => return Step::Lost,
                Msg::Held(false) => self.client = Msg::Start,
                _ => {}
            }
        }
        let head_request = self.heads & 1 == 1;
        self.heads >>= 1;
        self.waiting = self.waiting.saturating_sub(1);
        // RFC 9112 section 6.3, rules 1 to 8 in order.
        self.app = if head_request || head.code == 204 || head.code == 304 {
            Msg::Start
        } else {
            match head.framing {
                Framing {
                    chunked: Some(true),
                    ..
                } => Msg::Body(Body::Chunked(Chunked::new())),
                Framing {
                    chunked: Some(false),
                    ..
                } => Msg::UntilClose,
                Framing {
                    length: Some(0), ..
                } => Msg::Start,
                Framing {
                    length: Some(n), ..
                } => Msg::Body(Body::Length(n)),
                Framing { length: None, .. } => Msg::UntilClose,
            }
        };
        Step::Took(used)
    }
}

/// How many empty-line bytes `data` starts with: a recipient ignores empty lines before a
/// request line (RFC 9112 section 2.2), and some clients send a stray CRLF after a body.
/// httparse skips them too; skipping them here keeps them out of a head's buffer, so a
/// connection that got one stays idle.
fn empty_lines(data: &[u8]) -> usize {
    data.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// Feeds `data` to the head that `buf` holds the start of (none when empty). Parses in place
/// when the head starts in `data`; copies into `buf` only a head left incomplete.
fn feed_head<T>(buf: &mut Vec<u8>, data: &[u8], parse: fn(&[u8]) -> Parsed<T>) -> Fed<T> {
    if buf.is_empty() {
        return match parse(data) {
            Parsed::Complete(len, head) if len <= MAX_HEAD => Fed::Done(len, head),
            Parsed::Complete(..) | Parsed::Invalid => Fed::Invalid,
            Parsed::Partial if data.len() >= MAX_HEAD => Fed::Invalid,
            Parsed::Partial => {
                buf.extend_from_slice(data);
                Fed::More
            }
        };
    }
    let old = buf.len();
    let take = data.get(..MAX_HEAD.saturating_sub(old)).unwrap_or(data);
    let needed = old + take.len();
    if needed > buf.capacity() {
        // Grow as a Vec would, but never past the cap.
        let target = needed.max(buf.capacity().saturating_mul(2)).min(MAX_HEAD);
        buf.reserve_exact(target.saturating_sub(old));
    }
    buf.extend_from_slice(take);
    // A head ends at its first empty line, and `buf` starts past any leading ones: so it is
    // parsed again only when the new bytes bring one, not on every read (which would be
    // quadratic for a head sent a byte at a time).
    if has_empty_line(buf.get(old.saturating_sub(2)..).unwrap_or_default()) {
        match parse(buf) {
            Parsed::Complete(len, head) => {
                return match len.checked_sub(old) {
                    Some(used) if used > 0 && used <= take.len() => Fed::Done(used, head),
                    _ => Fed::Invalid,
                };
            }
            Parsed::Invalid => return Fed::Invalid,
            Parsed::Partial => {}
        }
    }
    if buf.len() >= MAX_HEAD {
        Fed::Invalid
    } else {
        Fed::More
    }
}

/// Whether `bytes` hold the end of a line followed by an empty line (bare `LF` line ends
/// count, as httparse accepts them).
fn has_empty_line(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

fn parse_request(bytes: &[u8]) -> Parsed<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let (Some(method), Some(version)) = (request.method, request.version) else {
        return Parsed::Invalid;
    };
    let headers = &*request.headers;
    let Ok(framing) = framing(headers, version) else {
        return Parsed::Invalid;
    };
    // RFC 9112 section 6.3: rule 3 (both headers: the server must close after responding,
    // and may have framed it either way), rule 4 (not chunked last: 400 and close), rule 6,
    // rule 7 (neither: no body).
    let body = match framing {
        Framing {
            chunked: Some(true),
            length: None,
        } => Some(Body::Chunked(Chunked::new())),
        Framing {
            chunked: Some(_), ..
        } => return Parsed::Invalid,
        Framing {
            length: Some(n), ..
        } if n > 0 => Some(Body::Length(n)),
        Framing { .. } => None,
    };
    let upgrade = has_token(headers, "connection", |t| {
        t.eq_ignore_ascii_case(b"upgrade")
    }) && has_token(headers, "upgrade", |t| {
        // A protocol may carry a version (`name/version`, RFC 9110 section 7.8).
        let name = t.split(|&b| b == b'/').next().unwrap_or_default();
        name.eq_ignore_ascii_case(b"websocket")
    });
    // Methods are case-sensitive (RFC 9110 section 9.1).
    let switch = match method {
        "CONNECT" => Some(Switch::Connect),
        _ if upgrade => Some(Switch::WebSocket),
        _ => None,
    };
    Parsed::Complete(
        len,
        RequestHead {
            head_method: method == "HEAD",
            switch,
            body,
        },
    )
}

fn parse_response(bytes: &[u8]) -> Parsed<ResponseHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let (Some(code), Some(version)) = (response.code, response.version) else {
        return Parsed::Invalid;
    };
    match framing(response.headers, version) {
        Ok(framing) => Parsed::Complete(len, ResponseHead { code, framing }),
        Err(Unframed) => Parsed::Invalid,
    }
}

/// The framing headers of a head, valid: an invalid or conflicting `Content-Length` is
/// unrecoverable (RFC 9112 section 6.3, rule 5), and so is `Transfer-Encoding` in HTTP/1.0
/// (section 6.1: the framing is faulty).
fn framing(headers: &[httparse::Header<'_>], version: u8) -> Result<Framing, Unframed> {
    let mut codings = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .peekable();
    let chunked = if codings.peek().is_some() {
        if version == 0 {
            return Err(Unframed);
        }
        let last = codings.flat_map(|h| list(h.value)).last();
        Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")))
    } else {
        None
    };
    let mut length = None;
    for header in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        // Repeats are allowed when identical, as a list or as lines (section 6.3, rule 5).
        for value in header.value.split(|&b| b == b',') {
            let n = decimal(value.trim_ascii()).ok_or(Unframed)?;
            if length.is_some_and(|l| l != n) {
                return Err(Unframed);
            }
            length = Some(n);
        }
    }
    Ok(Framing { chunked, length })
}

/// The elements of a list-valued header (RFC 9110 section 5.6.1), empty ones left out.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether a header named `name` lists an element `matches` accepts.
fn has_token(
    headers: &[httparse::Header<'_>],
    name: &str,
    matches: impl Fn(&[u8]) -> bool,
) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| list(h.value))
        .any(matches)
}

/// `1*DIGIT` (RFC 9110 section 8.6), when it fits.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = char::from(b).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Takes up to `available` bytes of the `remaining` ones: how many.
fn take(remaining: &mut u64, available: usize) -> usize {
    let n = usize::try_from(*remaining).map_or(available, |r| r.min(available));
    *remaining = remaining.saturating_sub(u64::try_from(n).unwrap_or(u64::MAX));
    n
}

impl Body {
    /// Follows `data`: how many of its bytes belong to the body, and whether it ended there.
    fn follow(&mut self, data: &[u8]) -> Result<(usize, bool), Unframed> {
        match self {
            Body::Length(remaining) => {
                let n = take(remaining, data.len());
                Ok((n, *remaining == 0))
            }
            Body::Chunked(chunked) => chunked.follow(data),
        }
    }
}

impl Chunked {
    fn new() -> Self {
        Self {
            at: ChunkAt::SizeStart,
            size: 0,
            line: 0,
        }
    }

    /// Follows `data`: how many of its bytes belong to the body, and whether it ended there.
    /// Line ends are `CRLF` only: a bare `LF` is something servers disagree on (RFC 9112
    /// section 2.2 only allows it), the stuff of request smuggling, so not followed.
    fn follow(&mut self, data: &[u8]) -> Result<(usize, bool), Unframed> {
        use ChunkAt::{
            Data, DataCr, DataLf, EndLf, Ext, Size, SizeLf, SizeSpace, SizeStart, TrailerLf,
            TrailerLine, TrailerStart,
        };
        let mut pos = 0;
        while let Some(&byte) = data.get(pos) {
            if self.at == Data {
                pos += take(&mut self.size, data.len() - pos);
                if self.size == 0 {
                    self.at = DataCr;
                }
                continue;
            }
            pos += 1;
            self.line = self.line.saturating_add(1);
            if usize::try_from(self.line).map_or(true, |line| line > MAX_HEAD) {
                return Err(Unframed);
            }
            self.at = match (self.at, byte) {
                (SizeStart | Size, _) if byte.is_ascii_hexdigit() => {
                    let digit = char::from(byte).to_digit(16).ok_or(Unframed)?;
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(digit)))
                        .ok_or(Unframed)?;
                    Size
                }
                (Size | SizeSpace, b' ' | b'\t') => SizeSpace,
                (Size | SizeSpace, b';') => Ext,
                (Size | SizeSpace | Ext, b'\r') => SizeLf,
                (Ext, b'\n') => return Err(Unframed),
                (Ext, _) => Ext,
                (SizeLf, b'\n') => {
                    self.line = 0;
                    // `last-chunk` is a size of zero (section 7.1).
                    if self.size == 0 { TrailerStart } else { Data }
                }
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    self.line = 0;
                    SizeStart
                }
                (TrailerStart, b'\r') => EndLf,
                (TrailerLine, b'\r') => TrailerLf,
                (TrailerStart | TrailerLine, b'\n') => return Err(Unframed),
                (TrailerStart | TrailerLine, _) => TrailerLine,
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => return Ok((pos, true)),
                _ => return Err(Unframed),
            };
        }
        Ok((pos, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which side sends.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Peer {
        Client,
        App,
    }
    use Peer::{App, Client};

    /// After one piece of a script: how many of its bytes were HTTP, the stage, idleness.
    type Seen = (usize, Stage, bool);

    fn send(ex: &mut Exchange, from: Peer, data: &[u8]) -> usize {
        let n = match from {
            Client => ex.client_bytes(data),
            App => ex.app_bytes(data),
        };
        assert!(n <= data.len());
        n
    }

    /// Plays `script`, each piece cut where `cut` says (a cut at `i` ends a call before byte
    /// `i` of the piece); what was seen after each piece.
    fn play(script: &[(Peer, &[u8])], cut: &mut dyn FnMut(usize, usize) -> bool) -> Vec<Seen> {
        let mut ex = Exchange::new();
        let mut seen = Vec::new();
        for (k, &(from, data)) in script.iter().enumerate() {
            let mut taken = 0;
            let mut start = 0;
            for i in 1..=data.len() {
                if i == data.len() || cut(k, i) {
                    taken += send(&mut ex, from, &data[start..i]);
                    start = i;
                }
            }
            seen.push((taken, ex.stage(), ex.idle()));
        }
        seen
    }

    /// A small deterministic generator, for chunkings.
    fn lcg(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        }
    }

    /// Plays `script` whole, then byte by byte, at every single cut of every piece, and in
    /// three random chunkings: all must see the same. Returns what was seen.
    fn same_at_every_split(script: &[(Peer, &[u8])]) -> Vec<Seen> {
        let whole = play(script, &mut |_, _| false);
        assert_eq!(play(script, &mut |_, _| true), whole, "byte by byte");
        for (k, &(_, data)) in script.iter().enumerate() {
            for at in 1..data.len() {
                let seen = play(script, &mut |piece, i| piece == k && i == at);
                assert_eq!(seen, whole, "piece {k} cut at {at}");
            }
        }
        for seed in 1..=3 {
            let mut next = lcg(seed);
            let seen = play(script, &mut |_, _| next().is_multiple_of(7));
            assert_eq!(seen, whole, "random chunking {seed}");
        }
        whole
    }

    const HTTP: Stage = Stage::Http;

    #[test]
    fn keep_alive_get_then_response_with_content_length() {
        let script: &[(Peer, &[u8])] = &[
            (Client, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            (App, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            (Client, b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"),
            (App, b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nhi"),
        ];
        let seen = same_at_every_split(script);
        assert_eq!(
            seen,
            [
                (27, HTTP, false),
                (43, HTTP, true),
                (28, HTTP, false),
                (43, HTTP, true)
            ]
        );
    }

    #[test]
    fn chunked_bodies_both_ways_at_every_split() {
        let script: &[(Peer, &[u8])] = &[
            (
                Client,
                b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                  5;name=\"v;al\"\r\nhello\r\n00A \t;x\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n",
            ),
            (
                App,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  3\r\nabc\r\n10\r\n0123456789abcdef\r\n000\r\n\r\n",
            ),
            (Client, b"GET / HTTP/1.1\r\n\r\n"),
        ];
        let seen = same_at_every_split(script);
        let lens: Vec<usize> = script.iter().map(|(_, d)| d.len()).collect();
        assert_eq!(
            seen,
            [
                (lens[0], HTTP, false),
                (lens[1], HTTP, true),
                (lens[2], HTTP, false)
            ]
        );
    }

    #[test]
    fn pipelined_requests_answered_oldest_first() {
        let script: &[(Peer, &[u8])] = &[
            (
                Client,
                b"GET /1 HTTP/1.1\r\n\r\nHEAD /2 HTTP/1.1\r\n\r\n\
                  POST /3 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            ),
            // The HEAD's response announces a length but has no body.
            (App, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"),
            (App, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
            (App, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        ];
        let seen = same_at_every_split(script);
        assert!(seen.iter().all(|&(_, stage, _)| stage == HTTP));
        let idle: Vec<bool> = seen.iter().map(|s| s.2).collect();
        assert_eq!(idle, [false, false, false, true]);
    }

    #[test]
    fn head_204_and_304_responses_have_no_body() {
        let script: &[(Peer, &[u8])] = &[
            (Client, b"HEAD / HTTP/1.1\r\n\r\n"),
            (
                App,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (Client, b"DELETE /x HTTP/1.1\r\n\r\n"),
            (App, b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"),
            (Client, b"GET / HTTP/1.1\r\nIf-None-Match: \"a\"\r\n\r\n"),
            (
                App,
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
            ),
        ];
        let seen = same_at_every_split(script);
        let idle: Vec<bool> = seen.iter().map(|s| s.2).collect();
        assert_eq!(idle, [false, true, false, true, false, true]);
    }

    #[test]
    fn continue_then_final_response() {
        let script: &[(Peer, &[u8])] = &[
            (
                Client,
                b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
            ),
            (App, b"HTTP/1.1 100 Continue\r\n\r\n"),
            (Client, b"data"),
            (App, b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"),
            (App, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ];
        let seen = same_at_every_split(script);
        let idle: Vec<bool> = seen.iter().map(|s| s.2).collect();
        assert_eq!(idle, [false, false, false, false, true]);
        assert!(seen.iter().all(|&(n, stage, _)| n > 0 && stage == HTTP));
    }

    const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    const SWITCHED: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\n\r\n";

    #[test]
    fn websocket_upgrade_splits_at_the_heads() {
        let frame: &[u8] = &[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        let client = [UPGRADE, frame].concat();
        let app = [SWITCHED, &[0x81, 0x02, b'o', b'k']].concat();
        let script: &[(Peer, &[u8])] = &[(Client, &client), (App, &app), (Client, frame)];
        let seen = same_at_every_split(script);
        assert_eq!(
            seen,
            [
                (UPGRADE.len(), HTTP, false),
                (SWITCHED.len(), Stage::WebSocket, false),
                (0, Stage::WebSocket, false)
            ]
        );
    }

    #[test]
    fn upgrade_refused_continues_as_http() {
        let script: &[(Peer, &[u8])] = &[
            (Client, UPGRADE),
            (
                App,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad",
            ),
            (Client, b"GET / HTTP/1.1\r\n\r\n"),
            (App, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ];
        let seen = same_at_every_split(script);
        assert_eq!(seen[0], (UPGRADE.len(), HTTP, false));
        assert_eq!(seen[1], (50, HTTP, true));
        assert_eq!(seen[3], (38, HTTP, true));
    }

    #[test]
    fn upgrade_refused_after_more_client_bytes_is_lost() {
        let client = [UPGRADE, b"GET / HTTP/1.1\r\n\r\n"].concat();
        let script: &[(Peer, &[u8])] = &[
            (Client, &client),
            (
                App,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            ),
        ];
        let seen = same_at_every_split(script);
        assert_eq!(seen[0], (UPGRADE.len(), HTTP, false));
        assert_eq!(seen[1].1, Stage::Lost);
    }

    #[test]
    fn other_switches_are_lost() {
        let h2c: &[u8] =
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\
            HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
        let switched: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n";
        let seen = same_at_every_split(&[(Client, h2c), (App, switched)]);
        assert_eq!(seen[0], (h2c.len(), HTTP, false));
        assert_eq!(seen[1].1, Stage::Lost);

        // Without `Connection: upgrade`, a 101 answers a plain request.
        let half: &[u8] = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
        let seen = same_at_every_split(&[(Client, half), (App, SWITCHED)]);
        assert_eq!(seen[1].1, Stage::Lost);

        let connect: &[u8] = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n";
        let client = [connect, b"\x16\x03\x01"].concat();
        let seen = same_at_every_split(&[(Client, &client), (App, b"HTTP/1.1 200 OK\r\n\r\n")]);
        assert_eq!(seen[0], (connect.len(), HTTP, false));
        assert_eq!(seen[1].1, Stage::Lost);

        // A refused CONNECT continues.
        let seen = same_at_every_split(&[
            (Client, connect),
            (App, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
        ]);
        assert_eq!(seen[1], (45, HTTP, true));
    }

    #[test]
    fn close_delimited_response_is_never_idle() {
        let seen = same_at_every_split(&[
            (Client, b"GET / HTTP/1.0\r\n\r\n"),
            (App, b"HTTP/1.0 200 OK\r\n\r\nthe body"),
            (App, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ]);
        assert_eq!(seen[1], (27, HTTP, false));
        // Still body: everything is.
        assert_eq!(seen[2], (38, HTTP, false));

        // A transfer coding other than chunked last is close-delimited too.
        let seen = same_at_every_split(&[
            (Client, b"GET / HTTP/1.1\r\n\r\n"),
            (
                App,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxyz",
            ),
        ]);
        assert_eq!(seen[1], (47, HTTP, false));
    }

    #[test]
    fn head_over_the_limit_is_lost() {
        let head = |len: usize| {
            let mut head = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
            head.resize(len - 4, b'a');
            head.extend_from_slice(b"\r\n\r\n");
            head
        };
        for (len, stage) in [(MAX_HEAD, HTTP), (MAX_HEAD + 1, Stage::Lost)] {
            let head = head(len);
            let whole = play(&[(Client, &head)], &mut |_, _| false);
            assert_eq!(whole[0].1, stage, "{len} whole");
            let bytewise = play(&[(Client, &head)], &mut |_, _| true);
            assert_eq!(bytewise, whole, "{len} byte by byte");
            let mut next = lcg(9);
            let chunked = play(&[(Client, &head)], &mut |_, _| next().is_multiple_of(1000));
            assert_eq!(chunked, whole, "{len} in chunks");
        }
        // An endless head is lost once it passes the limit, with no more buffered.
        let mut ex = Exchange::new();
        ex.client_bytes(b"GET / HTTP/1.1\r\nX-Pad: ");
        for _ in 0..MAX_HEAD / 1000 {
            ex.client_bytes(&[b'a'; 1000]);
        }
        assert_eq!(ex.stage(), HTTP);
        assert!(!ex.idle());
        ex.client_bytes(&[b'a'; 1000]);
        assert_eq!(ex.stage(), Stage::Lost);
        assert!(matches!(ex.client, Msg::Start));
    }

    #[test]
    fn garbage_is_lost() {
        let get: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        let cases: &[&[(Peer, &[u8])]] = &[
            &[(Client, b"\x16\x03\x01\x02\x00\x01\x00")],
            &[(Client, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")],
            &[(App, b"HTTP/1.1 200 OK\r\n\r\n")],
            &[(
                Client,
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            )],
            &[(Client, b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n")],
            &[(
                Client,
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            )],
            &[(
                Client,
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            )],
            &[(
                Client,
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            )],
            &[(
                Client,
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            )],
            &[(
                Client,
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n",
            )],
            &[(
                Client,
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            )],
            &[(
                Client,
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
            )],
            &[(Client, get), (App, b"HTTP/1.1 2000 OK\r\n\r\n")],
            &[
                (Client, get),
                (App, b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            ],
            &[(Client, get), (App, b"SSH-2.0-OpenSSH\r\n\r\n")],
            &[(Client, get), (App, b"HTTP/1.1 099 Odd\r\n\r\n")],
        ];
        for script in cases {
            let seen = same_at_every_split(script);
            let last = seen.last().copied();
            let last_len = script.last().map_or(0, |(_, d)| d.len());
            assert_eq!(last, Some((last_len, Stage::Lost, false)), "{script:?}");
        }
        // Lost stays lost, and counts everything.
        let mut ex = Exchange::new();
        ex.client_bytes(b"\x00");
        assert_eq!(ex.client_bytes(get), get.len());
        assert_eq!(ex.app_bytes(b"HTTP/1.1 200 OK\r\n\r\n"), 19);
        assert_eq!(ex.stage(), Stage::Lost);
        assert!(!ex.idle());
    }

    #[test]
    fn too_many_pipelined_requests_are_lost() {
        let mut ex = Exchange::new();
        for _ in 0..MAX_WAITING {
            ex.client_bytes(b"GET / HTTP/1.1\r\n\r\n");
        }
        assert_eq!(ex.stage(), HTTP);
        ex.client_bytes(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(ex.stage(), Stage::Lost);
    }

    #[test]
    fn stray_empty_lines_keep_the_connection_idle() {
        let seen = same_at_every_split(&[
            (Client, b"GET / HTTP/1.1\r\n\r\n"),
            (App, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            (Client, b"\r\n"),
            (Client, b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
        ]);
        assert_eq!(seen[2], (2, HTTP, true));
        assert_eq!(seen[3], (22, HTTP, false));
    }

    /// Idleness after every byte of an exchange: only before the request and after the
    /// whole response.
    #[test]
    fn idle_at_every_point_of_an_exchange() {
        let request: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let response: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let mut ex = Exchange::new();
        for _ in 0..2 {
            assert!(ex.idle());
            for (i, byte) in request.iter().enumerate() {
                assert_eq!(ex.client_bytes(&[*byte]), 1);
                assert!(!ex.idle(), "request byte {i}");
            }
            for (i, byte) in response.iter().enumerate() {
                assert_eq!(ex.app_bytes(&[*byte]), 1);
                assert_eq!(ex.idle(), i == response.len() - 1, "response byte {i}");
            }
        }
        // Nothing stays allocated between requests.
        assert!(matches!((&ex.client, &ex.app), (Msg::Start, Msg::Start)));
    }

    #[test]
    fn a_response_starting_early_is_not_idle() {
        // The app may answer before the request's body is all in: still mid-request.
        let mut ex = Exchange::new();
        ex.client_bytes(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab");
        ex.app_bytes(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n");
        assert!(!ex.idle());
        ex.client_bytes(b"cd");
        assert!(ex.idle());
    }
}
