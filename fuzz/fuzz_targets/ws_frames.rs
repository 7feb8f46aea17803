//! Fuzzes the WebSocket frame follower: any bytes in any chunking; it must never panic, give
//! back the stream byte for byte, and agree with a simple whole-buffer parse on where frames
//! and messages end, which control frames it saw, and where the framing broke.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/forward/ws_frames.rs"]
mod ws_frames;

use ws_frames::{Control, Event, Frames, MAX_CONTROL_FRAME};

/// What the whole-buffer parse found.
struct Reference {
    /// `(at_frame_boundary, at_message_boundary)` after `i` bytes, up to where it broke.
    flags: Vec<(bool, bool)>,
    /// `true` after `i` bytes when a frame ends (or starts) there: no `Pass` may run across.
    ends: Vec<bool>,
    /// The complete control frames: opcode and unmasked payload.
    controls: Vec<(u8, Vec<u8>)>,
    /// The byte that showed the stream is not WebSocket framing.
    lost: Option<usize>,
}

/// Parses `input` frame by frame, knowing all of it: a second opinion written the plain way.
fn reference(input: &[u8]) -> Reference {
    let mut r = Reference {
        flags: vec![(false, false); input.len() + 1],
        ends: vec![false; input.len() + 1],
        controls: Vec::new(),
        lost: None,
    };
    r.flags[0] = (true, true);
    r.ends[0] = true;
    let mut open = false;
    let mut at = 0;
    while let Some(&first) = input.get(at) {
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0F;
        let control = opcode & 0x08 != 0;
        let fits = match opcode {
            0 => open,
            1 | 2 => !open,
            8..=10 => fin,
            _ => false,
        };
        if !fits {
            r.lost = Some(at);
            return r;
        }
        if !control {
            open = !fin;
        }
        // Inside a control frame nothing was passed yet: a frame boundary.
        let inside = (control, control && !open);
        let mut mark = |to: usize| {
            for flag in &mut r.flags[at + 1..=to.min(input.len())] {
                *flag = inside;
            }
        };
        let Some(&second) = input.get(at + 1) else {
            mark(input.len());
            return r;
        };
        let len7 = second & 0x7F;
        if control && len7 > 125 {
            mark(at + 1);
            r.lost = Some(at + 1);
            return r;
        }
        let extended = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        if extended == 8 && input.get(at + 2).is_some_and(|b| b & 0x80 != 0) {
            r.lost = Some(at + 2);
            return r;
        }
        let masked = second & 0x80 != 0;
        let header = 2 + extended + if masked { 4 } else { 0 };
        let Some(head) = input.get(at..at + header) else {
            mark(input.len());
            return r;
        };
        let len = match extended {
            2 => u64::from(u16::from_be_bytes([head[2], head[3]])),
            8 => u64::from_be_bytes(head[2..10].try_into().unwrap()),
            _ => u64::from(len7),
        };
        let end = (at as u64)
            .saturating_add(header as u64)
            .saturating_add(len);
        if end > input.len() as u64 {
            mark(input.len());
            return r;
        }
        let end = end as usize;
        mark(end - 1);
        if control {
            let key = if masked {
                &head[header - 4..]
            } else {
                &[0; 4][..]
            };
            let payload = input[at + header..end]
                .iter()
                .zip(key.iter().cycle())
                .map(|(b, k)| b ^ k)
                .collect();
            r.controls.push((opcode, payload));
        }
        r.flags[end] = (true, !open);
        r.ends[end] = true;
        at = end;
    }
    r
}

fn opcode(kind: Control) -> u8 {
    match kind {
        Control::Close => 8,
        Control::Ping => 9,
        Control::Pong => 10,
    }
}

/// Feeds `stream` to a follower once, whole, and returns what it saw of its one control frame.
fn follow_one(frame: &[u8]) -> (Control, Vec<u8>) {
    let mut frames = Frames::new();
    assert_eq!(frames.next(frame), Event::Control(frame.len()));
    let c = frames.control().unwrap();
    assert_eq!(c.bytes, frame);
    (c.kind, c.payload.to_vec())
}

fuzz_target!(|data: &[u8]| {
    // The first byte: how many chunk sizes follow (0: everything in one call), and a mask.
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let Some((sizes, stream)) = rest.split_at_checked(usize::from(head & 7)) else {
        return;
    };
    let mask = (head & 8 != 0).then_some([0xA5, 0x01, 0x7E, 0xFF]);
    let mut sizes = sizes
        .iter()
        .map(|&s| {
            if s == 0xFF {
                usize::MAX / 2
            } else {
                usize::from(s) + 1
            }
        })
        .cycle();

    let expect = reference(stream);
    let mut frames = Frames::new();
    let mut out = Vec::with_capacity(stream.len());
    let mut controls = Vec::new();
    let mut lost = None;
    let mut pos = 0;
    while pos < stream.len() {
        let end = sizes
            .next()
            .map_or(stream.len(), |size| (pos + size).min(stream.len()));
        while pos < end {
            let rest = &stream[pos..end];
            let event = frames.next(rest);
            if frames.lost() {
                if lost.is_none() {
                    let culprit = expect.lost.expect("lost where the reference is not");
                    assert!(
                        pos <= culprit && culprit < end,
                        "lost at {culprit}, not {pos}..{end}"
                    );
                    out.extend_from_slice(frames.held());
                    lost = Some(culprit);
                } else {
                    assert!(frames.held().is_empty());
                }
                assert_eq!(event, Event::Pass(rest.len()));
                assert!(!frames.at_frame_boundary() && !frames.at_message_boundary());
                assert!(frames.control().is_none());
                out.extend_from_slice(rest);
                pos = end;
                continue;
            }
            match event {
                Event::Pass(n) => {
                    assert!(n > 0 && n <= rest.len());
                    assert!(
                        !expect.ends[pos + 1..pos + n].contains(&true),
                        "a Pass crossed a frame end"
                    );
                    out.extend_from_slice(&rest[..n]);
                    pos += n;
                }
                Event::Held(n) => {
                    assert_eq!(n, rest.len());
                    assert!(frames.control().is_none());
                    pos += n;
                }
                Event::Control(n) => {
                    assert!(n > 0 && n <= rest.len());
                    let c = frames.control().unwrap();
                    assert!(c.payload.len() <= 125 && c.bytes.len() <= MAX_CONTROL_FRAME);
                    out.extend_from_slice(c.bytes);
                    controls.push((opcode(c.kind), c.payload.to_vec()));
                    pos += n;
                }
            }
            let flags = (frames.at_frame_boundary(), frames.at_message_boundary());
            assert_eq!(flags, expect.flags[pos], "flags after {pos} bytes");
        }
    }
    if lost.is_none() {
        // A control frame cut off by the end of the input is still held, not lost.
        out.extend_from_slice(frames.held());
    }
    assert_eq!(out, stream, "the stream reassembles");
    assert_eq!(lost, expect.lost);
    assert_eq!(controls, expect.controls);

    // The frames we build ourselves read back as built, whatever the payload.
    let reason = String::from_utf8_lossy(stream);
    let code = u16::from(head) << 8 | stream.len() as u16;
    let (kind, payload) = follow_one(&ws_frames::close_frame(code, &reason, mask));
    assert_eq!(kind, Control::Close);
    assert!(payload.len() <= 125);
    assert_eq!(ws_frames::close_code(&payload), Some(code));
    let text = std::str::from_utf8(&payload[2..]).unwrap();
    assert!(reason.starts_with(text) && (text.len() == reason.len() || text.len() + 4 > 123));
    let (kind, payload) = follow_one(&ws_frames::ping_frame(stream, mask));
    assert_eq!(kind, Control::Ping);
    assert_eq!(payload, stream[..stream.len().min(125)]);
});
