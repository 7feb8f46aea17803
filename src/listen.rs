//! Binding every listener (TLS, admin, plain HTTP, the injector's, the demo's) in one place:
//! `[::]` takes IPv4 and IPv6 on one socket, and falls back to `0.0.0.0` where the host has no
//! IPv6.
//!
//! Why `[::]` with `IPV6_V6ONLY` off: the kubelet probes `status.podIP`
//! (pkg/kubelet/prober/prober.go, `runProbe`: `host = status.PodIP` for httpGet and tcpSocket
//! probes), and on an IPv6 or IPv6-first dual-stack cluster that address is IPv6, so a
//! `0.0.0.0` listener fails every probe. Kubernetes Services and other pods may still use the
//! IPv4 address on dual-stack clusters, so one socket must take both: with `IPV6_V6ONLY` off an
//! IPv4 client arrives as `::ffff:a.b.c.d`. The kernel default for that option
//! (`net.ipv6.bindv6only`) is a sysctl, so it is set per socket rather than trusted.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

use crate::config::ConfigError;

/// The accept-queue length every listener gets unless `--listen-backlog` says otherwise: the
/// backlog tokio's own `TcpListener::bind` uses.
pub const DEFAULT_BACKLOG: i32 = 1024;

/// Binds `addr` for `flag` with [`DEFAULT_BACKLOG`]. `[::]` (any port) takes IPv4 and IPv6;
/// when the host has no IPv6, it falls back to `0.0.0.0` with an info line. Any other address
/// is bound as given. A bind failure is configuration (exit code 64) and names the flag.
pub fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, ConfigError> {
    bind_with_backlog(flag, addr, DEFAULT_BACKLOG)
}

/// [`bind`] with an accept queue of `backlog` connections. The kernel silently caps it at
/// `net.core.somaxconn` (net/socket.c, `__sys_listen`: `if ((unsigned int)backlog > somaxconn)
/// backlog = somaxconn;`), which is per network namespace, so a pod's own sysctl applies.
pub fn bind_with_backlog(
    flag: &'static str,
    addr: SocketAddr,
    backlog: i32,
) -> Result<TcpListener, ConfigError> {
    let first = bind_socket(addr, backlog);
    let (bound, result) = match ipv4_fallback(addr, first.as_ref().err()) {
        Some(v4) => {
            tracing::info!(
                flag,
                requested = %addr,
                bound = %v4,
                "this host has no IPv6; listening on IPv4 only"
            );
            (v4, bind_socket(v4, backlog))
        }
        None => (addr, first),
    };
    result.map_err(|e| ConfigError {
        flag,
        message: format!("cannot listen on {bound}: {e}"),
    })
}

/// [`bind`] when the listener is enabled.
pub fn bind_optional(
    flag: &'static str,
    addr: Option<SocketAddr>,
) -> Result<Option<TcpListener>, ConfigError> {
    addr.map(|addr| bind(flag, addr)).transpose()
}

/// The IPv4 address to bind instead of `addr` after binding it failed with `error`: only for the
/// IPv6 wildcard, and only when the error says the host has no IPv6 (`EAFNOSUPPORT`: a kernel
/// without IPv6, `ipv6.disable=1`; `EADDRNOTAVAIL`: no usable IPv6 address). With only the
/// `net.ipv6.conf.*.disable_ipv6=1` sysctls (many containers) `[::]` still binds and takes
/// IPv4 clients, so no fallback is needed there (tried in a network namespace). An address in
/// use or a privileged port is not a reason to change the family.
pub fn ipv4_fallback(addr: SocketAddr, error: Option<&io::Error>) -> Option<SocketAddr> {
    let error = error?;
    let SocketAddr::V6(v6) = addr else {
        return None;
    };
    if !v6.ip().is_unspecified() {
        return None;
    }
    let no_ipv6 = error.kind() == io::ErrorKind::AddrNotAvailable
        || error.raw_os_error() == Some(EAFNOSUPPORT);
    no_ipv6.then(|| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), v6.port()))
}

/// `EAFNOSUPPORT` on Linux (asm-generic/errno.h); std has no `ErrorKind` for it.
const EAFNOSUPPORT: i32 = 97;

/// One listening socket, as tokio's `TcpListener::bind` makes it (`SO_REUSEADDR`), with
/// `backlog`, plus `IPV6_V6ONLY` off for IPv6.
fn bind_socket(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_ipv6_wildcard_falls_back_and_only_for_no_ipv6() {
        let not_avail = io::Error::from(io::ErrorKind::AddrNotAvailable);
        let no_family = io::Error::from_raw_os_error(EAFNOSUPPORT);
        let in_use = io::Error::from(io::ErrorKind::AddrInUse);
        assert_eq!(
            ipv4_fallback(addr("[::]:8443"), Some(&not_avail)),
            Some(addr("0.0.0.0:8443"))
        );
        assert_eq!(
            ipv4_fallback(addr("[::]:9090"), Some(&no_family)),
            Some(addr("0.0.0.0:9090"))
        );
        assert_eq!(ipv4_fallback(addr("[::]:8443"), Some(&in_use)), None);
        assert_eq!(ipv4_fallback(addr("[::]:8443"), None), None);
        assert_eq!(ipv4_fallback(addr("[::1]:8443"), Some(&not_avail)), None);
        assert_eq!(
            ipv4_fallback(addr("[fd10::1]:8443"), Some(&no_family)),
            None
        );
        assert_eq!(
            ipv4_fallback(addr("127.0.0.1:8443"), Some(&not_avail)),
            None
        );
    }

    #[tokio::test]
    async fn the_wildcard_takes_ipv4_and_ipv6_clients() {
        let listener = bind("--listen", addr("[::]:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        for client in ["127.0.0.1", "::1"] {
            let target = SocketAddr::new(client.parse().unwrap(), port);
            let connect = tokio::net::TcpStream::connect(target);
            let (connected, accepted) = tokio::join!(connect, listener.accept());
            connected.unwrap_or_else(|e| panic!("{client} could not connect: {e}"));
            let (_, peer) = accepted.unwrap();
            assert_eq!(peer.ip().to_canonical().to_string(), client);
        }
    }

    /// Connections the kernel completes on a listener nobody accepts from: Linux queues
    /// `backlog + 1` (`sk_acceptq_is_full` is `ack_backlog > max_ack_backlog`) and then drops
    /// further SYNs, so the next connect hangs in SYN retransmits.
    async fn queued_without_accept(backlog: i32) -> usize {
        let listener = bind_with_backlog("--listen", addr("127.0.0.1:0"), backlog).unwrap();
        let target = listener.local_addr().unwrap();
        let mut held = Vec::new();
        loop {
            let connect = tokio::net::TcpStream::connect(target);
            match tokio::time::timeout(Duration::from_millis(300), connect).await {
                Ok(stream) => held.push(stream.unwrap()),
                Err(_) => return held.len(),
            }
            assert!(held.len() <= 64, "the backlog of {backlog} was not applied");
        }
    }

    #[tokio::test]
    async fn the_backlog_sets_the_accept_queue() {
        assert_eq!(queued_without_accept(2).await, 3);
        assert_eq!(queued_without_accept(9).await, 10);
    }

    #[tokio::test]
    async fn a_taken_port_names_the_flag() {
        let first = bind("--admin-listen", addr("[::]:0")).unwrap();
        let taken = first.local_addr().unwrap();
        let err = bind("--admin-listen", taken).unwrap_err();
        assert_eq!(err.flag, "--admin-listen");
        assert!(err.message.contains("cannot listen on"), "{}", err.message);
    }
}
