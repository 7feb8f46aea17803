//! Ticket keys: the text format shared by `file:` and `secret:` sources (1 to 3 lines of
//! base64, oldest first), rotation, and the AEAD keys built from them.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The key name: sent in clear at the start of every ticket, so a server finds the key.
pub const NAME_LEN: usize = 16;
/// An AES-256-GCM key.
pub const KEY_LEN: usize = 32;
/// One line decodes to the name followed by the key.
pub const ENTRY_LEN: usize = NAME_LEN + KEY_LEN;
/// Previous, current and next: a ticket stays decryptable for a rotation after its key stopped
/// encrypting, and every replica knows a key a rotation before any encrypts with it (watch lag).
pub const MAX_KEYS: usize = 3;

/// Why ticket-key text was refused. None shows key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No line at all.
    #[error("no ticket key (expected 1 to {MAX_KEYS} lines of base64)")]
    Empty,
    /// More lines than previous, current and next.
    #[error("{0} ticket keys (expected 1 to {MAX_KEYS} lines, oldest first)")]
    TooMany(usize),
    /// A line is not standard base64.
    #[error("line {0} is not base64")]
    NotBase64(usize),
    /// A line does not decode to a 16-byte name and a 32-byte key.
    #[error(
        "line {line} decodes to {len} bytes, expected {ENTRY_LEN} (16-byte name, 32-byte AES-256 key)"
    )]
    WrongLength {
        /// 1-based line number.
        line: usize,
        /// What it decoded to.
        len: usize,
    },
    /// Two lines share a key name, so a ticket could not say which key made it.
    #[error("lines {0} and {1} have the same key name")]
    DuplicateName(usize, usize),
    /// The system random generator failed (new keys cannot be made).
    #[error("the system random number generator failed")]
    Random,
}

/// Key entries as stored: name ‖ key, oldest first. Debug shows only how many.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyText {
    entries: Vec<[u8; ENTRY_LEN]>,
}

impl fmt::Debug for KeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyText({} keys)", self.entries.len())
    }
}

impl KeyText {
    /// Parses the stored form: 1 to 3 non-empty lines (blank lines and surrounding space are
    /// ignored), each standard base64 of exactly 48 bytes.
    pub fn parse(text: &[u8]) -> Result<Self, KeyError> {
        let text = String::from_utf8_lossy(text);
        let mut entries: Vec<[u8; ENTRY_LEN]> = Vec::new();
        let lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        for (index, line) in lines.enumerate() {
            let number = index + 1;
            if number > MAX_KEYS {
                return Err(KeyError::TooMany(
                    text.lines().filter(|l| !l.trim().is_empty()).count(),
                ));
            }
            let bytes = BASE64
                .decode(line)
                .map_err(|_| KeyError::NotBase64(number))?;
            let entry: [u8; ENTRY_LEN] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::WrongLength {
                        line: number,
                        len: bytes.len(),
                    })?;
            if let Some(earlier) = entries
                .iter()
                .position(|e| e[..NAME_LEN] == entry[..NAME_LEN])
            {
                return Err(KeyError::DuplicateName(earlier + 1, number));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { entries })
    }

    /// Three fresh random keys: previous, current and next.
    pub fn random() -> Result<Self, KeyError> {
        let mut keys = Self {
            entries: Vec::with_capacity(MAX_KEYS),
        };
        for _ in 0..MAX_KEYS {
            keys.entries.push(random_entry()?);
        }
        Ok(keys)
    }

    /// One rotation: a fresh key is added as the newest and the oldest beyond three dropped
    /// (previous ← current, current ← next, next ← random).
    pub fn rotated(&self) -> Result<Self, KeyError> {
        let mut entries = self.entries.clone();
        entries.push(random_entry()?);
        let excess = entries.len().saturating_sub(MAX_KEYS);
        entries.drain(..excess);
        Ok(Self { entries })
    }

    /// The stored form: one base64 line per key, oldest first.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for entry in &self.entries {
            text.push_str(&BASE64.encode(entry));
            text.push('\n');
        }
        text
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true: a `KeyText` holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn random_entry() -> Result<[u8; ENTRY_LEN], KeyError> {
    let mut entry = [0u8; ENTRY_LEN];
    aws_lc_rs::rand::fill(&mut entry).map_err(|_| KeyError::Random)?;
    Ok(entry)
}

/// One usable key: its name and the AEAD key.
pub struct TicketKey {
    pub(super) name: [u8; NAME_LEN],
    pub(super) aead: LessSafeKey,
}

/// The keys a ticketer uses: encrypts with the next-to-last (the only one when there is one),
/// as HAProxy's `tls-ticket-keys` does with the penultimate key; decrypts with any.
pub struct TicketKeys {
    keys: Vec<TicketKey>,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketKeys({} keys)", self.keys.len())
    }
}

impl TicketKeys {
    /// The AEAD keys of `text`.
    pub fn new(text: &KeyText) -> Self {
        let keys = text
            .entries
            .iter()
            .filter_map(|entry| {
                let (name, key) = entry.split_at(NAME_LEN);
                // A 32-byte key is always accepted for AES-256-GCM.
                let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
                Some(TicketKey {
                    name: name.try_into().ok()?,
                    aead,
                })
            })
            .collect();
        Self { keys }
    }

    /// The key new tickets are encrypted with.
    pub fn encrypting(&self) -> Option<&TicketKey> {
        let index = self.keys.len().saturating_sub(2);
        self.keys.get(index)
    }

    /// The key named `name`, if it is one of ours.
    pub fn named(&self, name: &[u8]) -> Option<&TicketKey> {
        self.keys.iter().find(|k| k.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(byte: u8) -> String {
        BASE64.encode([byte; ENTRY_LEN])
    }

    #[test]
    fn one_to_three_lines_of_48_bytes_parse_and_round_trip() {
        let text = format!("{}\n\n  {}  \n{}\n", line(1), line(2), line(3));
        let keys = KeyText::parse(text.as_bytes()).unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(KeyText::parse(keys.to_text().as_bytes()).unwrap(), keys);
        assert_eq!(KeyText::parse(line(9).as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn bad_text_is_refused_with_the_line_and_no_key_bytes() {
        let four = [1, 2, 3, 4].map(line).join("\n");
        let short = BASE64.encode([7u8; 32]);
        let cases: [(String, KeyError); 5] = [
            ("\n \n".into(), KeyError::Empty),
            (four, KeyError::TooMany(4)),
            (format!("{}\nnot base64!", line(1)), KeyError::NotBase64(2)),
            (short.clone(), KeyError::WrongLength { line: 1, len: 32 }),
            (
                format!("{}\n{}", line(5), line(5)),
                KeyError::DuplicateName(1, 2),
            ),
        ];
        for (text, expected) in cases {
            let err = KeyText::parse(text.as_bytes()).unwrap_err();
            assert_eq!(err, expected, "{text:?}");
            assert!(!err.to_string().contains(&short), "{err}");
        }
        assert_eq!(
            format!("{:?}", KeyText::random().unwrap()),
            "KeyText(3 keys)"
        );
    }

    #[test]
    fn rotation_shifts_previous_current_next_and_adds_a_fresh_key() {
        let start = KeyText::random().unwrap();
        let once = start.rotated().unwrap();
        assert_eq!(
            once.entries[..2],
            start.entries[1..],
            "current and next moved down"
        );
        assert!(!start.entries.contains(&once.entries[2]), "a fresh next");
        let grown = KeyText::parse(line(1).as_bytes())
            .unwrap()
            .rotated()
            .unwrap();
        assert_eq!(
            grown.len(),
            2,
            "an operator's single key is kept as the older one"
        );
        assert_eq!(grown.entries[0], [1; ENTRY_LEN]);
    }

    #[test]
    fn the_next_to_last_key_encrypts() {
        let names = |text: &str| {
            let keys = TicketKeys::new(&KeyText::parse(text.as_bytes()).unwrap());
            keys.encrypting().unwrap().name[0]
        };
        assert_eq!(names(&line(1)), 1);
        assert_eq!(names(&[1, 2].map(line).join("\n")), 1);
        assert_eq!(names(&[1, 2, 3].map(line).join("\n")), 2);
    }
}
