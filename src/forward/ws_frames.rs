//! Follows the WebSocket frames (RFC 6455 section 5.2) of one direction of a forwarded byte
//! stream, so the proxy knows where frames and messages end and sees the control frames.
//!
//! Data-frame payloads are never copied or looked at: only a data frame's header is kept, to
//! find its end. Control frames (at most [`MAX_CONTROL_FRAME`] bytes) are held until whole, so
//! the caller can pass them on, drop them (a Pong answering our own Ping) or act on them (a
//! Close). RSV bits are never checked: they belong to the extensions the endpoints agreed on
//! (permessage-deflate sets RSV1), and such messages must pass untouched.

/// Largest control frame on the wire: 2 header bytes, a 4-byte mask, 125 payload bytes.
pub const MAX_CONTROL_FRAME: usize = 131;

/// Control frames carry at most 125 payload bytes (RFC 6455 section 5.5), so their length
/// always fits the 7-bit field.
const MAX_CONTROL_PAYLOAD: u8 = 125;

const FIN: u8 = 0x80;
const OPCODE: u8 = 0x0F;
const MASK: u8 = 0x80;
const LEN7: u8 = 0x7F;
/// 7-bit lengths that announce a 16-bit or a 64-bit extended length.
const LEN16: u8 = 126;
const LEN64: u8 = 127;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The control opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Close,
    Ping,
    Pong,
}

/// What the follower made of the start of the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The first `n` bytes pass through unchanged: data-frame header bytes and payload bytes.
    /// A `Pass` never runs past the end of a frame, so the caller can check the boundaries
    /// after each one.
    Pass(usize),
    /// `n` bytes were taken into the follower's buffer: part of a control frame not yet
    /// complete. Nothing to write for them yet.
    Held(usize),
    /// `n` bytes were taken and completed a control frame, readable with [`Frames::control`]
    /// until the next call to `next`.
    Control(usize),
}

/// Where the follower stands in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Between two frames.
    Between,
    /// Inside a data frame's header: `buf[..fill]` holds the part already passed on.
    DataHeader,
    /// Inside a data frame's payload: `remaining` bytes to go.
    DataPayload,
    /// Inside a control frame: `buf[..fill]` holds the part taken so far.
    Control,
    /// A control frame just completed: `buf[..fill]` as received, its payload unmasked in
    /// `payload`. Between two frames, as far as the boundaries go.
    ControlDone,
    /// Not WebSocket framing. `buf[..fill]` holds what was taken and not given back (the
    /// start of the control frame that showed it), until the next call.
    Lost,
}

/// One direction's frames.
///
/// Whether the direction is masked needs no setting: each frame's MASK bit says, and it is
/// not enforced (the endpoints do that).
#[derive(Debug, Clone)]
pub struct Frames {
    /// The control frame being held, or the header of the data frame being passed (kept only
    /// to decode its length).
    buf: [u8; MAX_CONTROL_FRAME],
    /// The completed control frame's payload, unmasked. A copy of its own because
    /// [`ControlFrame`] lends out both the frame as received and its unmasked payload.
    payload: [u8; MAX_CONTROL_PAYLOAD as usize],
    /// Payload bytes left in the current data frame.
    remaining: u64,
    /// How much of `buf` is in use; never more than [`MAX_CONTROL_FRAME`].
    fill: u8,
    stage: Stage,
    /// A data message was started without FIN and has not ended yet.
    message_open: bool,
}

impl Default for Frames {
    fn default() -> Self {
        Self::new()
    }
}

impl Frames {
    /// A follower standing at the start of a stream, between messages.
    pub fn new() -> Self {
        Self {
            buf: [0; MAX_CONTROL_FRAME],
            payload: [0; MAX_CONTROL_PAYLOAD as usize],
            remaining: 0,
            fill: 0,
            stage: Stage::Between,
            message_open: false,
        }
    }

    /// Follows the start of `data` and returns how much was consumed and how. An empty
    /// `data` gives `Pass(0)` and changes nothing.
    ///
    /// Once the stream turns out not to be WebSocket framing ([`lost`](Self::lost)), the
    /// returned event says nothing more: the caller writes [`held`](Self::held), then all of
    /// `data`.
    pub fn next(&mut self, data: &[u8]) -> Event {
        if data.is_empty() {
            return Event::Pass(0);
        }
        match self.stage {
            Stage::Lost => {
                // Whatever was stranded was handed over after the call that found it.
                self.fill = 0;
                Event::Pass(data.len())
            }
            Stage::Between | Stage::ControlDone => {
                self.fill = 0;
                self.stage = Stage::Between;
                self.start(data)
            }
            Stage::DataHeader => self.take_header(data),
            Stage::DataPayload => Event::Pass(self.take_payload(data)),
            Stage::Control => self.take_control(data),
        }
    }

    /// Nothing of a frame has been passed on without its end: the output stands between two
    /// frames (a control frame still held counts: none of it was passed on).
    pub fn at_frame_boundary(&self) -> bool {
        matches!(
            self.stage,
            Stage::Between | Stage::Control | Stage::ControlDone
        )
    }

    /// At a frame boundary and not inside a fragmented data message (the last data frame had
    /// FIN set, or there was none).
    pub fn at_message_boundary(&self) -> bool {
        self.at_frame_boundary() && !self.message_open
    }

    /// The control frame the last `Event::Control` completed.
    pub fn control(&self) -> Option<ControlFrame<'_>> {
        if self.stage != Stage::ControlDone {
            return None;
        }
        let kind = match self.buf[0] & OPCODE {
            CLOSE => Control::Close,
            PING => Control::Ping,
            PONG => Control::Pong,
            _ => return None,
        };
        Some(ControlFrame {
            kind,
            bytes: self.buf.get(..usize::from(self.fill))?,
            payload: self.payload.get(..usize::from(self.buf[1] & LEN7))?,
        })
    }

    /// The bytes taken (`Held`) and not written yet: the start of a control frame still
    /// incomplete, or, right after the call to `next` that found the stream [`lost`](Self::lost),
    /// the start of the frame that showed it (taken in earlier calls), which the caller must
    /// write before that call's `data` to keep the stream whole. Empty otherwise.
    pub fn held(&self) -> &[u8] {
        match self.stage {
            Stage::Control | Stage::Lost => {
                self.buf.get(..usize::from(self.fill)).unwrap_or_default()
            }
            _ => &[],
        }
    }

    /// The stream is not WebSocket framing (reserved opcode 3-7/0xB-0xF, a control frame
    /// longer than 125 bytes or without FIN, a 64-bit length with the top bit set, a
    /// continuation frame outside a message, a new data frame inside a fragmented message).
    /// From then on `next` passes everything (`Pass(data.len())`) and both boundary checks are
    /// false forever.
    pub fn lost(&self) -> bool {
        self.stage == Stage::Lost
    }

    /// A frame starts at `data[0]`: its first byte says whether it may come here at all.
    fn start(&mut self, data: &[u8]) -> Event {
        let Some(&first) = data.first() else {
            return Event::Pass(0);
        };
        let fin = first & FIN != 0;
        match first & OPCODE {
            CONTINUATION if self.message_open => {}
            TEXT | BINARY if !self.message_open => {}
            // Control frames must not be fragmented (section 5.5).
            CLOSE | PING | PONG if fin => {
                self.stage = Stage::Control;
                return self.take_control(data);
            }
            _ => return self.lose(data, 0),
        }
        // The message state changes with the frame's first byte: until the frame ends we are
        // not at a frame boundary, so no one can see the difference.
        self.message_open = !fin;
        self.stage = Stage::DataHeader;
        self.take_header(data)
    }

    /// Passes the data frame's header bytes at the start of `data`, and its payload too once
    /// the header says how long it is.
    fn take_header(&mut self, data: &[u8]) -> Event {
        let mut taken = 0;
        while usize::from(self.fill) < self.header_len() {
            let Some(&byte) = data.get(taken) else {
                return Event::Pass(taken);
            };
            self.push(byte);
            taken += 1;
            // Section 5.2: the most significant bit of a 64-bit length must be 0. A stream
            // that breaks it is something else, and its "payload" cannot be measured.
            if self.fill == 3 && self.buf[1] & LEN7 == LEN64 && byte & 0x80 != 0 {
                return self.lose(data, 0);
            }
        }
        self.remaining = self.payload_len();
        self.fill = 0;
        self.stage = Stage::DataPayload;
        let payload = self.take_payload(data.get(taken..).unwrap_or_default());
        Event::Pass(taken + payload)
    }

    /// Passes what `data` has of the current data frame's payload; returns how much.
    fn take_payload(&mut self, data: &[u8]) -> usize {
        let n = usize::try_from(self.remaining).map_or(data.len(), |left| left.min(data.len()));
        self.remaining = self.remaining.saturating_sub(n as u64);
        if self.remaining == 0 {
            self.stage = Stage::Between;
        }
        n
    }

    /// Takes control-frame bytes from the start of `data` until the frame is complete.
    fn take_control(&mut self, data: &[u8]) -> Event {
        let held_before = self.fill;
        let mut taken = 0;
        loop {
            let need = if self.fill < 2 {
                2
            } else {
                self.header_len() + usize::from(self.buf[1] & LEN7)
            };
            if usize::from(self.fill) >= need {
                break;
            }
            let Some(&byte) = data.get(taken) else {
                return Event::Held(taken);
            };
            self.push(byte);
            taken += 1;
            if self.fill == 2 && byte & LEN7 > MAX_CONTROL_PAYLOAD {
                return self.lose(data, held_before);
            }
        }
        let header = self.header_len();
        let key = if self.buf[1] & MASK != 0 {
            // Control frames have no extended length, so the key follows the first two bytes.
            let [_, _, a, b, c, d, ..] = self.buf;
            [a, b, c, d]
        } else {
            [0; 4]
        };
        let len = usize::from(self.buf[1] & LEN7);
        let body = self.buf.get(header..header + len).unwrap_or_default();
        for ((out, byte), k) in self.payload.iter_mut().zip(body).zip(key.iter().cycle()) {
            *out = byte ^ k;
        }
        self.stage = Stage::ControlDone;
        Event::Control(taken)
    }

    /// Gives up following: `stranded` bytes at the start of `buf` were taken in earlier calls
    /// and never written, so [`held`](Self::held) hands them back.
    fn lose(&mut self, data: &[u8], stranded: u8) -> Event {
        self.fill = stranded;
        self.stage = Stage::Lost;
        self.message_open = false;
        Event::Pass(data.len())
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.buf.get_mut(usize::from(self.fill)) {
            *slot = byte;
            self.fill += 1;
        }
    }

    /// The current frame's header length (2 while its second byte is unknown).
    fn header_len(&self) -> usize {
        if self.fill < 2 {
            return 2;
        }
        let extended = match self.buf[1] & LEN7 {
            LEN16 => 2,
            LEN64 => 8,
            _ => 0,
        };
        let key = if self.buf[1] & MASK != 0 { 4 } else { 0 };
        2 + extended + key
    }

    /// The payload length of the data frame whose header `buf` holds whole.
    fn payload_len(&self) -> u64 {
        let [_, second, a, b, c, d, e, f, g, h, ..] = self.buf;
        match second & LEN7 {
            LEN16 => u64::from(u16::from_be_bytes([a, b])),
            LEN64 => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
            len => u64::from(len),
        }
    }
}

/// A complete control frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlFrame<'a> {
    pub kind: Control,
    /// The frame exactly as received (header, mask, payload): what to write to pass it on.
    pub bytes: &'a [u8],
    /// The payload, unmasked.
    pub payload: &'a [u8],
}

/// A Close frame's status code, if its payload has one (first two bytes, big-endian).
pub fn close_code(payload: &[u8]) -> Option<u16> {
    payload.first_chunk().copied().map(u16::from_be_bytes)
}

/// Builds a Close frame with FIN set: `mask` = Some(key) for client-to-server frames (RFC 6455
/// section 5.3), None for server-to-client. The reason is cut at a char boundary so the
/// payload stays within the 125 bytes a control frame may carry.
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let room = usize::from(MAX_CONTROL_PAYLOAD) - 2;
    // Index 0 is always a char boundary, so this stops there at the latest.
    let cut = (0..=reason.len().min(room))
        .rev()
        .find(|&at| reason.is_char_boundary(at))
        .unwrap_or(0);
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes().get(..cut).unwrap_or_default());
    control_frame(CLOSE, &payload, mask)
}

/// Builds a Ping frame with FIN set, masked like [`close_frame`]; a payload over 125 bytes is
/// cut to 125.
pub fn ping_frame(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    control_frame(PING, payload, mask)
}

fn control_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let len =
        u8::try_from(payload.len()).map_or(MAX_CONTROL_PAYLOAD, |len| len.min(MAX_CONTROL_PAYLOAD));
    let payload = payload.get(..usize::from(len)).unwrap_or_default();
    let mut frame = Vec::with_capacity(MAX_CONTROL_FRAME);
    frame.push(FIN | opcode);
    match mask {
        Some(key) => {
            frame.push(MASK | len);
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        }
        None => {
            frame.push(len);
            frame.extend_from_slice(payload);
        }
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a test frame writes its payload length.
    #[derive(Clone, Copy)]
    enum Width {
        /// The shortest encoding.
        Fit,
        Bits16,
        Bits64,
    }

    fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>, width: Width) -> Vec<u8> {
        let len = payload.len();
        let width = match width {
            Width::Fit if len < 126 => None,
            Width::Fit if len <= 0xFFFF => Some(Width::Bits16),
            Width::Fit => Some(Width::Bits64),
            other => Some(other),
        };
        let mask_bit = if mask.is_some() { MASK } else { 0 };
        let mut out = vec![first];
        match width {
            None => out.push(mask_bit | len as u8),
            Some(Width::Bits16) => {
                out.push(mask_bit | LEN16);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            Some(_) => {
                out.push(mask_bit | LEN64);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        match mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    /// A stream built frame by frame, with the boundary flags expected after each byte.
    struct Stream {
        bytes: Vec<u8>,
        /// `(at_frame_boundary, at_message_boundary)` after `i` bytes, for `i` in `0..=len`.
        flags: Vec<(bool, bool)>,
        open: bool,
    }

    impl Stream {
        fn new() -> Self {
            Self {
                bytes: Vec::new(),
                flags: vec![(true, true)],
                open: false,
            }
        }

        fn data(&mut self, first: u8, payload: &[u8], mask: Option<[u8; 4]>, width: Width) {
            let f = frame(first, payload, mask, width);
            self.open = first & FIN == 0;
            self.flags.extend((1..f.len()).map(|_| (false, false)));
            self.flags.push((true, !self.open));
            self.bytes.extend(f);
        }

        fn control(&mut self, first: u8, payload: &[u8], mask: Option<[u8; 4]>) {
            let f = frame(first, payload, mask, Width::Fit);
            self.flags.extend((0..f.len()).map(|_| (true, !self.open)));
            self.bytes.extend(f);
        }
    }

    /// What feeding a stream produced.
    struct Run {
        /// Passed bytes, control frames' bytes, and, once lost, the held bytes and the rest.
        out: Vec<u8>,
        controls: Vec<(Control, Vec<u8>)>,
        /// Where the call that found the stream lost started, and where its chunk ended.
        lost: Option<(usize, usize)>,
    }

    /// Feeds `input` in chunks of `sizes()` bytes, checking each event and, when given, the
    /// boundary flags after each one.
    fn run(input: &[u8], mut sizes: impl FnMut() -> usize, expect: Option<&[(bool, bool)]>) -> Run {
        let mut frames = Frames::new();
        let mut run = Run {
            out: Vec::new(),
            controls: Vec::new(),
            lost: None,
        };
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + sizes().max(1)).min(input.len());
            while pos < end {
                let rest = &input[pos..end];
                let event = frames.next(rest);
                if frames.lost() {
                    if run.lost.is_none() {
                        run.lost = Some((pos, end));
                        run.out.extend_from_slice(frames.held());
                    } else {
                        assert!(frames.held().is_empty());
                    }
                    assert_eq!(event, Event::Pass(rest.len()));
                    assert!(!frames.at_frame_boundary() && !frames.at_message_boundary());
                    assert!(frames.control().is_none());
                    run.out.extend_from_slice(rest);
                    pos = end;
                    continue;
                }
                match event {
                    Event::Pass(n) => {
                        assert!(n > 0 && n <= rest.len());
                        run.out.extend_from_slice(&rest[..n]);
                        pos += n;
                    }
                    Event::Held(n) => {
                        // Only an incomplete control frame is held: it took everything.
                        assert_eq!(n, rest.len());
                        assert!(frames.control().is_none());
                        pos += n;
                    }
                    Event::Control(n) => {
                        assert!(n > 0 && n <= rest.len());
                        let c = frames.control().unwrap();
                        assert!(c.payload.len() <= 125 && c.bytes.len() <= MAX_CONTROL_FRAME);
                        run.out.extend_from_slice(c.bytes);
                        run.controls.push((c.kind, c.payload.to_vec()));
                        pos += n;
                    }
                }
                if let Some(expect) = expect {
                    let got = (frames.at_frame_boundary(), frames.at_message_boundary());
                    assert_eq!(got, expect[pos], "flags after {pos} bytes");
                }
            }
        }
        assert_eq!(run.out, input, "the stream reassembles");
        run
    }

    /// xorshift64: random enough chunkings without a crate.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    const KEY: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

    /// Every kind of frame, masked or not, fragmented with interleaved controls.
    fn rich(mask: Option<[u8; 4]>) -> Stream {
        let mut s = Stream::new();
        s.data(FIN | TEXT, b"hello", mask, Width::Fit);
        s.control(FIN | PING, b"are you there", mask);
        s.data(BINARY, &[1; 130], mask, Width::Fit);
        s.control(FIN | PONG, b"", mask);
        s.data(CONTINUATION, b"", mask, Width::Fit);
        s.control(FIN | PING, &[0xAB; 125], mask);
        s.data(CONTINUATION, &[2; 300], mask, Width::Bits64);
        s.data(FIN | CONTINUATION, b"end", mask, Width::Bits16);
        // RSV1: a permessage-deflate message, fragmented, passes like any other.
        s.data(0x40 | TEXT, &[3; 7], mask, Width::Fit);
        s.control(FIN | 0x70 | PING, b"rsv", mask);
        s.data(FIN | 0x40 | CONTINUATION, &[4; 70_000], mask, Width::Fit);
        s.data(FIN | BINARY, b"", mask, Width::Fit);
        s.control(FIN | CLOSE, &[0x03, 0xE8, b'o', b'k'], mask);
        s
    }

    #[test]
    fn frames_is_small() {
        let size = std::mem::size_of::<Frames>();
        println!("size_of::<Frames>() = {size}");
        assert!(size <= 272, "{size}");
    }

    #[test]
    fn byte_at_a_time() {
        for mask in [None, Some(KEY)] {
            let s = rich(mask);
            let run = run(&s.bytes, || 1, Some(&s.flags));
            assert!(run.lost.is_none());
            let kinds: Vec<Control> = run.controls.iter().map(|c| c.0).collect();
            use Control::*;
            assert_eq!(kinds, [Ping, Pong, Ping, Ping, Close]);
            assert_eq!(run.controls[0].1, b"are you there");
            assert_eq!(run.controls[2].1, [0xAB; 125]);
            assert_eq!(close_code(&run.controls[4].1), Some(1000));
        }
    }

    #[test]
    fn whole_at_once() {
        for mask in [None, Some(KEY)] {
            let s = rich(mask);
            let run = run(&s.bytes, || usize::MAX / 2, Some(&s.flags));
            assert_eq!(run.controls.len(), 5);
        }
    }

    #[test]
    fn every_split() {
        // Small frames keep this quadratic walk quick.
        for mask in [None, Some(KEY)] {
            let mut s = Stream::new();
            s.data(TEXT, b"ab", mask, Width::Bits64);
            s.control(FIN | PING, b"p", mask);
            s.data(FIN | CONTINUATION, &[9; 200], mask, Width::Fit);
            s.control(FIN | CLOSE, b"", mask);
            for split in 0..=s.bytes.len() {
                let mut sizes = [split, usize::MAX / 2].into_iter();
                let run = run(&s.bytes, || sizes.next().unwrap_or(1), Some(&s.flags));
                assert_eq!(run.controls.len(), 2);
            }
        }
    }

    #[test]
    fn random_chunkings() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for mask in [None, Some(KEY)] {
            let s = rich(mask);
            for _ in 0..300 {
                let limit = [3, 20, 200, 100_000][rng.below(4) as usize];
                let run = run(&s.bytes, || rng.below(limit) as usize + 1, Some(&s.flags));
                assert_eq!(run.controls.len(), 5);
            }
        }
    }

    #[test]
    fn boundaries_around_a_fragmented_message() {
        let mut frames = Frames::new();
        let first = frame(TEXT, b"one", None, Width::Fit);
        assert_eq!(frames.next(&first), Event::Pass(first.len()));
        assert!(frames.at_frame_boundary() && !frames.at_message_boundary());
        let ping = ping_frame(b"x", None);
        assert_eq!(frames.next(&ping[..1]), Event::Held(1));
        assert!(frames.at_frame_boundary() && !frames.at_message_boundary());
        assert_eq!(frames.next(&ping[1..]), Event::Control(ping.len() - 1));
        assert!(frames.at_frame_boundary() && !frames.at_message_boundary());
        assert_eq!(frames.control().unwrap().bytes, ping);
        let last = frame(FIN | CONTINUATION, b"two", None, Width::Fit);
        assert_eq!(frames.next(&last[..1]), Event::Pass(1));
        assert!(frames.control().is_none());
        assert!(!frames.at_frame_boundary() && !frames.at_message_boundary());
        assert_eq!(frames.next(&last[1..]), Event::Pass(last.len() - 1));
        assert!(frames.at_frame_boundary() && frames.at_message_boundary());
    }

    #[test]
    fn a_pass_stops_at_the_end_of_a_frame() {
        let mut input = frame(FIN | BINARY, &[5; 10], Some(KEY), Width::Fit);
        let first = input.len();
        input.extend(frame(FIN | TEXT, b"", None, Width::Fit));
        input.extend(frame(FIN | TEXT, b"z", None, Width::Fit));
        let mut frames = Frames::new();
        assert_eq!(frames.next(&input), Event::Pass(first));
        assert_eq!(frames.next(&input[first..]), Event::Pass(2));
        assert!(frames.at_message_boundary());
        assert_eq!(frames.next(&input[first + 2..]), Event::Pass(3));
    }

    #[test]
    fn empty_data_changes_nothing() {
        let mut frames = Frames::new();
        let ping = ping_frame(b"", None);
        assert_eq!(frames.next(&ping), Event::Control(2));
        assert_eq!(frames.next(&[]), Event::Pass(0));
        assert!(frames.control().is_some());
    }

    #[test]
    fn each_cause_of_loss() {
        let mut open = frame(TEXT, b"a", None, Width::Fit);
        let lost_after = |prefix: &[u8], bad: &[u8]| {
            let mut input = prefix.to_vec();
            input.extend_from_slice(bad);
            input.extend_from_slice(&[0x81, 0x00, 0xFF, 0x88]);
            (input, prefix.len())
        };
        let mut cases = Vec::new();
        for opcode in (3..=7).chain(0xB..=0xF) {
            cases.push(lost_after(b"", &[FIN | opcode, 0]));
        }
        // A control frame longer than 125 bytes: found at its second byte.
        for len in [126, 127] {
            cases.push(lost_after(b"", &[FIN | PING, len]));
            cases.push(lost_after(b"", &[FIN | CLOSE, MASK | len, 1, 2, 3, 4]));
        }
        // A fragmented control frame.
        cases.push(lost_after(b"", &[PONG, 0]));
        // A 64-bit length with its top bit set: found at the first length byte.
        cases.push(lost_after(
            b"",
            &[FIN | BINARY, LEN64, 0x80, 0, 0, 0, 0, 0, 0, 0],
        ));
        // A continuation outside a message.
        cases.push(lost_after(b"", &[FIN | CONTINUATION, 0]));
        // A new data frame inside a fragmented message, even after a control frame.
        cases.push(lost_after(&open, &[FIN | BINARY, 0]));
        open.extend(ping_frame(b"", Some(KEY)));
        cases.push(lost_after(&open, &[TEXT, 0]));
        for (input, start) in cases {
            // The byte that shows it: the opcode's, or the length's for the two above.
            let culprit = match input[start] & OPCODE {
                CLOSE | PING if input[start + 1] & LEN7 > 125 => start + 1,
                BINARY if input[start + 1] == LEN64 => start + 2,
                _ => start,
            };
            let whole = run(&input, || usize::MAX / 2, None);
            assert_eq!(whole.lost, Some((start, input.len())), "{input:?}");
            let bytes = run(&input, || 1, None);
            assert_eq!(bytes.lost, Some((culprit, culprit + 1)), "{input:?}");
            for split in 1..input.len() {
                let mut sizes = [split, usize::MAX / 2].into_iter();
                let run = run(&input, || sizes.next().unwrap_or(1), None);
                let (pos, end) = run.lost.unwrap();
                assert!(
                    pos <= culprit && culprit < end,
                    "{input:?} split at {split}"
                );
            }
        }
    }

    #[test]
    fn lost_hands_back_what_it_held() {
        let mut frames = Frames::new();
        assert_eq!(frames.next(&[FIN | PING]), Event::Held(1));
        assert_eq!(frames.held(), [FIN | PING]);
        assert_eq!(frames.next(&[126, 0, 0]), Event::Pass(3));
        assert!(frames.lost());
        assert_eq!(frames.held(), [FIN | PING]);
        assert_eq!(frames.next(&[1]), Event::Pass(1));
        assert!(frames.held().is_empty());
    }

    #[test]
    fn held_shows_an_incomplete_control_frame() {
        // RSV1 on a Close, then 106 payload bytes announced and 3 given: still held, not lost.
        let mut frames = Frames::new();
        assert_eq!(frames.next(&[0xC8, 0x6A, b'j']), Event::Held(3));
        assert_eq!(frames.held(), [0xC8, 0x6A, b'j']);
        assert!(!frames.lost() && frames.at_message_boundary());
    }

    #[test]
    fn close_codes() {
        assert_eq!(close_code(b""), None);
        assert_eq!(close_code(&[0x03]), None);
        assert_eq!(close_code(&[0x03, 0xE8]), Some(1000));
        assert_eq!(close_code(&[0x03, 0xF4, b'h', b'i']), Some(1012));
    }

    /// Feeds one frame byte by byte and returns what the follower saw in it.
    fn follow_one(frame: &[u8]) -> (Control, Vec<u8>) {
        let run = run(frame, || 1, None);
        assert!(run.lost.is_none());
        assert_eq!(run.controls.len(), 1);
        run.controls.into_iter().next().unwrap()
    }

    #[test]
    fn built_frames_round_trip() {
        for mask in [None, Some(KEY)] {
            let close = close_frame(1012, "service restart", mask);
            assert_eq!(close[0], FIN | CLOSE);
            assert_eq!(close[1] & MASK != 0, mask.is_some());
            let (kind, payload) = follow_one(&close);
            assert_eq!(kind, Control::Close);
            assert_eq!(close_code(&payload), Some(1012));
            assert_eq!(&payload[2..], b"service restart");

            let ping = ping_frame(&[7, 8, 9], mask);
            assert_eq!(follow_one(&ping), (Control::Ping, vec![7, 8, 9]));
            let empty = ping_frame(b"", mask);
            assert_eq!(empty.len(), 2 + mask.map_or(0, |_| 4));
            assert_eq!(follow_one(&empty), (Control::Ping, vec![]));
        }
    }

    #[test]
    fn long_payloads_are_cut_to_fit() {
        for mask in [None, Some(KEY)] {
            let (_, payload) = follow_one(&ping_frame(&[1; 300], mask));
            assert_eq!(payload, [1; 125]);

            let ascii = "r".repeat(200);
            let (_, payload) = follow_one(&close_frame(1000, &ascii, mask));
            assert_eq!(payload.len(), 125);
            assert_eq!(&payload[2..], &ascii.as_bytes()[..123]);

            // 2- and 3-byte chars: cut before the char that would cross 123 bytes.
            for (reason, kept) in [("é".repeat(100), 122), ("€".repeat(100), 123)] {
                let (_, payload) = follow_one(&close_frame(1001, &reason, mask));
                let text = std::str::from_utf8(&payload[2..]).unwrap();
                assert_eq!(text.len(), kept);
                assert!(reason.starts_with(text));
            }
            let (_, payload) = follow_one(&close_frame(1000, "", mask));
            assert_eq!(payload, [0x03, 0xE8]);
        }
    }
}
