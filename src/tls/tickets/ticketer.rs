//! Our `ProducesTickets`: AES-256-GCM under the keys of the moment, swapped atomically when a
//! key source publishes new ones. A ticket is key name (16) ‖ nonce (12) ‖ ciphertext ‖ tag
//! (16), the name authenticated as associated data.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};
use prometheus_client::metrics::counter::Counter;
use rustls::server::ProducesTickets;

use super::keys::{NAME_LEN, TicketKeys};
use crate::metrics::TicketMetrics;

/// The AES-GCM tag.
const TAG_LEN: usize = 16;
/// RFC 8446 §4.6.1: "Servers MUST NOT use any value greater than 604800 seconds (7 days)".
pub const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Issues and opens TLS 1.3 session tickets with the keys last published.
///
/// Nonces are random: AES-GCM stays safe for 2^32 random nonces per key (NIST SP 800-38D
/// §8.3), which at the default 12 h rotation is ~100,000 new tickets a second across all the
/// replicas sharing the key.
pub struct Ticketer {
    keys: ArcSwapOption<TicketKeys>,
    lifetime: u32,
    issued: Counter,
    resumed: Counter,
    unknown_key: Counter,
    invalid: Counter,
}

impl fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticketer")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Ticketer {
    /// A ticketer with no keys yet (it issues no ticket until [`Ticketer::publish`]), whose
    /// tickets live for `rotation`: a key encrypts for one rotation and decrypts for one more,
    /// so every ticket can be opened for its whole lifetime.
    pub fn new(rotation: Duration, metrics: &TicketMetrics) -> Arc<Self> {
        let lifetime = rotation.min(MAX_LIFETIME).as_secs();
        Arc::new(Self {
            keys: ArcSwapOption::empty(),
            lifetime: u32::try_from(lifetime).unwrap_or(u32::MAX),
            issued: metrics.tickets_issued.clone(),
            resumed: metrics.ticket_opens("resumed"),
            unknown_key: metrics.ticket_opens("unknown_key"),
            invalid: metrics.ticket_opens("invalid"),
        })
    }

    /// Serves `keys` from now on; tickets of keys no longer in the set stop opening.
    pub fn publish(&self, keys: TicketKeys) {
        self.keys.store(Some(Arc::new(keys)));
    }

    /// Whether keys have been published.
    pub fn has_keys(&self) -> bool {
        self.keys.load().is_some()
    }
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.load();
        let key = keys.as_ref()?.encrypting()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let header = NAME_LEN + NONCE_LEN;
        let mut ticket = Vec::with_capacity(header + plain.len() + TAG_LEN);
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let tag = key
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&key.name),
                &mut ticket[header..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        self.issued.inc();
        Some(ticket)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        // `cipher` is the client's: every length is checked before it is split.
        if cipher.len() < NAME_LEN + NONCE_LEN + TAG_LEN {
            self.invalid.inc();
            return None;
        }
        let (name, rest) = cipher.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let keys = self.keys.load();
        let Some(key) = keys.as_ref().and_then(|keys| keys.named(name)) else {
            self.unknown_key.inc();
            return None;
        };
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut plain = sealed.to_vec();
        match key.aead.open_in_place(nonce, Aad::from(name), &mut plain) {
            Ok(opened) => {
                let len = opened.len();
                plain.truncate(len);
                self.resumed.inc();
                Some(plain)
            }
            Err(_) => {
                self.invalid.inc();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::tls::tickets::keys::KeyText;

    fn ticketer(text: &KeyText) -> Arc<Ticketer> {
        let metrics = Metrics::new();
        let ticketer = Ticketer::new(Duration::from_secs(3600), &metrics.tickets);
        ticketer.publish(TicketKeys::new(text));
        ticketer
    }

    #[test]
    fn a_ticket_opens_with_the_same_keys_on_another_ticketer() {
        let keys = KeyText::random().unwrap();
        let (a, b) = (ticketer(&keys), ticketer(&keys));
        let ticket = a.encrypt(b"session state").unwrap();
        assert_eq!(ticket.len(), NAME_LEN + NONCE_LEN + 13 + TAG_LEN);
        assert_ne!(&ticket[NAME_LEN + NONCE_LEN..][..13], b"session state");
        assert_eq!(b.decrypt(&ticket).unwrap(), b"session state");
        assert_ne!(
            a.encrypt(b"session state"),
            Some(ticket),
            "a fresh nonce each time"
        );
        assert_eq!(a.lifetime(), 3600);
    }

    #[test]
    fn a_ticket_opens_until_its_key_is_rotated_out() {
        let keys = KeyText::random().unwrap();
        let t = ticketer(&keys);
        let ticket = t.encrypt(b"s").unwrap();
        let once = keys.rotated().unwrap();
        t.publish(TicketKeys::new(&once));
        assert_eq!(t.decrypt(&ticket).as_deref(), Some(&b"s"[..]), "previous");
        t.publish(TicketKeys::new(&once.rotated().unwrap()));
        assert_eq!(t.decrypt(&ticket), None, "dropped after two rotations");
    }

    #[test]
    fn unknown_tampered_and_short_tickets_do_not_open() {
        let t = ticketer(&KeyText::random().unwrap());
        let other = ticketer(&KeyText::random().unwrap());
        let ticket = t.encrypt(b"state").unwrap();
        assert_eq!(other.decrypt(&ticket), None, "unknown key name");
        for at in [0, NAME_LEN, NAME_LEN + NONCE_LEN, ticket.len() - 1] {
            let mut tampered = ticket.clone();
            tampered[at] ^= 1;
            assert_eq!(t.decrypt(&tampered), None, "byte {at} flipped");
        }
        for len in [0, 10, NAME_LEN + NONCE_LEN + TAG_LEN - 1] {
            assert_eq!(t.decrypt(&ticket[..len]), None, "{len} bytes");
        }
        assert_eq!(t.decrypt(&ticket).as_deref(), Some(&b"state"[..]));
    }

    #[test]
    fn no_keys_no_tickets() {
        let metrics = Metrics::new();
        let t = Ticketer::new(Duration::from_secs(60), &metrics.tickets);
        assert!(!t.has_keys());
        assert_eq!(t.encrypt(b"state"), None);
        assert_eq!(t.decrypt(&[0; 64]), None);
        let long = Ticketer::new(Duration::from_secs(30 * 24 * 3600), &metrics.tickets);
        assert_eq!(long.lifetime(), 604_800, "capped at RFC 8446's 7 days");
    }
}
