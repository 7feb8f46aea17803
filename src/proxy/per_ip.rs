//! `--max-connections-per-ip`: live connections counted per client address (an IPv4 address,
//! or an IPv6 /64, what one host or one subscriber usually holds), refused over the limit.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Independent maps, so connections opening on different data threads rarely wait for each
/// other's lock: a power of two above the thread count of the nodes the sidecar runs on.
const SHARDS: usize = 16;

/// Below this many slots a shard's map is never shrunk: it costs a few KB, and shrinking
/// small maps would only reallocate them over and over.
const SHRINK_ABOVE: usize = 1024;

/// What one client is counted by: an IPv4 address (IPv4-mapped IPv6 included), or the first
/// 64 bits of an IPv6 one (a host chooses the rest freely, RFC 4941 privacy addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 address.
    V4(u32),
    /// An IPv6 /64 prefix.
    V6(u64),
}

impl ClientKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            // The top 64 bits: a u128 shifted right leaves at most 64 of them.
            IpAddr::V6(v6) => Self::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// The live connections of every client; one entry per client with at least one, so memory
/// is bounded by the live connections (themselves bounded by `--max-connections`).
#[derive(Debug)]
pub struct PerIp {
    limit: NonZeroU32,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<ClientKey, u32>>]>,
}

/// A connection's place in its client's count: dropping it gives the place back (and the
/// client's entry, with its last connection).
#[derive(Debug)]
pub struct PerIpGuard<'a> {
    map: &'a PerIp,
    key: ClientKey,
}

impl PerIp {
    /// A table that lets each client hold at most `limit` connections.
    pub fn new(limit: NonZeroU32) -> Self {
        Self {
            limit,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// A place for one more connection of `ip`'s client; `None` when it holds `limit` already.
    pub fn acquire(&self, ip: IpAddr) -> Option<PerIpGuard<'_>> {
        let key = ClientKey::of(ip);
        let mut shard = self.shard(key);
        let count = shard.entry(key).or_insert(0);
        if *count >= self.limit.get() {
            return None;
        }
        *count += 1;
        Some(PerIpGuard { map: self, key })
    }

    /// How many clients hold connections.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn shard(&self, key: ClientKey) -> MutexGuard<'_, HashMap<ClientKey, u32>> {
        // The hash's low bits pick the shard; the map inside hashes again with its own seed.
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        lock(&self.shards[index])
    }

    fn release(&self, key: ClientKey) {
        let mut shard = self.shard(key);
        if let Some(count) = shard.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                shard.remove(&key);
                // After a burst of distinct clients, give the slots back.
                let live = shard.len();
                if shard.capacity() > SHRINK_ABOVE && live < shard.capacity() / 4 {
                    shard.shrink_to(live * 2);
                }
            }
        }
    }
}

/// A shard's lock. Nothing panics while holding one, but were it poisoned the counts in it
/// are still whole (each update is one integer), so they are used as they are.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for PerIpGuard<'_> {
    fn drop(&mut self) {
        self.map.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(limit: u32) -> PerIp {
        PerIp::new(NonZeroU32::new(limit).unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_gets_limit_places_and_one_more_after_a_release() {
        let per_ip = table(2);
        let first = per_ip.acquire(ip("192.0.2.1")).unwrap();
        let _second = per_ip.acquire(ip("192.0.2.1")).unwrap();
        assert!(per_ip.acquire(ip("192.0.2.1")).is_none());
        // Another client is counted apart.
        let _other = per_ip.acquire(ip("192.0.2.2")).unwrap();
        drop(first);
        assert!(per_ip.acquire(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn ipv6_is_counted_by_64_and_mapped_ipv4_as_ipv4() {
        let per_ip = table(1);
        let _a = per_ip.acquire(ip("2001:db8:1:2::1")).unwrap();
        assert!(per_ip.acquire(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(per_ip.acquire(ip("2001:db8:1:3::1")).is_some());
        let _b = per_ip.acquire(ip("10.0.0.1")).unwrap();
        assert!(per_ip.acquire(ip("::ffff:10.0.0.1")).is_none());
        assert_eq!(
            ClientKey::of(ip("::ffff:10.0.0.1")),
            ClientKey::V4(0x0a00_0001)
        );
    }

    #[test]
    fn entries_go_with_their_last_connection() {
        let per_ip = table(3);
        let guards: Vec<_> = (0..5000u32)
            .map(|i| per_ip.acquire(IpAddr::from(i.to_be_bytes())).unwrap())
            .collect();
        let again = per_ip.acquire(ip("0.0.0.7")).unwrap();
        assert_eq!(per_ip.clients(), 5000);
        drop(guards);
        assert_eq!(per_ip.clients(), 1);
        drop(again);
        assert_eq!(per_ip.clients(), 0);
        // The burst's slots were given back.
        let slots: usize = per_ip.shards.iter().map(|s| lock(s).capacity()).sum();
        assert!(
            slots <= SHARDS * SHRINK_ABOVE,
            "{slots} slots after the burst"
        );
    }

    #[test]
    fn a_refused_client_leaves_no_entry() {
        let per_ip = table(1);
        let held = per_ip.acquire(ip("192.0.2.1")).unwrap();
        assert!(per_ip.acquire(ip("192.0.2.1")).is_none());
        drop(held);
        assert_eq!(per_ip.clients(), 0);
    }
}
