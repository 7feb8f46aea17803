//! Handshakes through [`ServerConfigs::choose`] with the ticketer fed by each key source: two
//! replicas sharing keys resume each other's sessions, keys rotated past a ticket fall back to
//! a full handshake, unusable keys keep the last good ones, TLS 1.2 gets no ticket.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::ClientConnection;
use rustls::server::Acceptor;
use rustls::{ClientConfig, HandshakeKind, RootCertStore};

use super::rotation::KEYS;
use super::*;
use crate::certs::{CertStore, self_signed};
use crate::k8s::SecretApi;
use crate::k8s::memory::{MemLease, MemSecret};
use crate::metrics::Metrics;
use crate::tls::{Resolver, ServerConfigs, provider};

const PERIOD: Duration = Duration::from_secs(3600);

/// One sidecar's TLS side: its own metrics, ticketer and configurations.
struct Replica {
    metrics: Arc<Metrics>,
    ticketer: Arc<Ticketer>,
    configs: ServerConfigs,
}

/// The certificate every replica serves, and a client trusting it.
struct World {
    store: Arc<CertStore>,
    roots: RootCertStore,
}

impl World {
    fn new() -> Self {
        let cert = self_signed::generate(&provider()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.key.cert[0].clone()).unwrap();
        let store = CertStore::new(Arc::new(Metrics::new()));
        store.register("self-signed").publish(cert);
        Self { store, roots }
    }

    fn replica(&self) -> Replica {
        let metrics = Arc::new(Metrics::new());
        let ticketer = Ticketer::new(PERIOD, &metrics.tickets);
        let resolver = Arc::new(Resolver::new(Arc::clone(&self.store)));
        let configs = ServerConfigs::build(resolver, None, Some(ticketer.clone())).unwrap();
        Replica {
            metrics,
            ticketer,
            configs,
        }
    }

    /// A client that keeps the tickets it is given (rustls' in-memory session cache).
    fn client(&self, version: &'static rustls::SupportedProtocolVersion) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// One connection from `client` to `replica`, through `choose`, with application data both
/// ways after the handshake; what kind of handshake the client saw.
fn connect(replica: &Replica, client: &Arc<ClientConfig>) -> HandshakeKind {
    use std::io::{Read, Write};
    let name = "localhost".try_into().unwrap();
    let mut client = ClientConnection::new(Arc::clone(client), name).unwrap();
    let mut acceptor = Acceptor::default();
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    acceptor.read_tls(&mut wire.as_slice()).unwrap();
    let accepted = acceptor.accept().map_err(|(e, _)| e).unwrap().unwrap();
    let config = replica.configs.choose_for(&accepted.client_hello(), &wire);
    let mut server = accepted
        .into_connection(config)
        .map_err(|(e, _)| e)
        .unwrap();
    client.writer().write_all(b"ping").unwrap();
    let mut got = Vec::new();
    for _ in 0..20 {
        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        client.read_tls(&mut wire.as_slice()).unwrap();
        client.process_new_packets().unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        server.read_tls(&mut wire.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        let mut buf = [0u8; 16];
        if let Ok(n) = server.reader().read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        if !client.is_handshaking() && !server.wants_write() && got == b"ping" {
            break;
        }
    }
    assert_eq!(got, b"ping", "the connection carries data");
    client.handshake_kind().unwrap()
}

fn opens(replica: &Replica, result: &'static str) -> u64 {
    replica.metrics.tickets.ticket_opens(result).get()
}

#[test]
fn replicas_with_the_same_keys_resume_each_others_sessions() {
    let world = World::new();
    let (a, b, other) = (world.replica(), world.replica(), world.replica());
    let keys = KeyText::random().unwrap();
    a.ticketer.publish(TicketKeys::new(&keys));
    b.ticketer.publish(TicketKeys::new(&keys));
    other
        .ticketer
        .publish(TicketKeys::new(&KeyText::random().unwrap()));
    let client = world.client(&rustls::version::TLS13);
    assert_eq!(connect(&a, &client), HandshakeKind::Full);
    assert!(a.metrics.tickets.tickets_issued.get() >= 1);
    assert_eq!(
        connect(&b, &client),
        HandshakeKind::Resumed,
        "on the other replica"
    );
    assert_eq!(opens(&b, "resumed"), 1);
    assert_eq!(connect(&other, &client), HandshakeKind::Full, "other keys");
    assert_eq!(opens(&other, "unknown_key"), 1);
}

#[test]
fn tls12_clients_get_no_ticket() {
    let world = World::new();
    let (a, b) = (world.replica(), world.replica());
    let keys = KeyText::random().unwrap();
    a.ticketer.publish(TicketKeys::new(&keys));
    b.ticketer.publish(TicketKeys::new(&keys));
    let client = world.client(&rustls::version::TLS12);
    assert_eq!(connect(&a, &client), HandshakeKind::Full);
    assert_eq!(
        a.metrics.tickets.tickets_issued.get(),
        0,
        "no TLS 1.2 ticket"
    );
    assert_eq!(
        connect(&b, &client),
        HandshakeKind::Full,
        "nothing to resume elsewhere"
    );
    assert!(!a.configs.default_config().ticketer.enabled());
}

#[test]
fn without_a_ticketer_every_client_gets_the_default_configuration() {
    let world = World::new();
    let resolver = Arc::new(Resolver::new(Arc::clone(&world.store)));
    let configs = ServerConfigs::build(resolver, None, None).unwrap();
    assert!(!configs.issues_tickets());
    let replica = Replica {
        metrics: Arc::new(Metrics::new()),
        ticketer: Ticketer::new(PERIOD, &Metrics::new().tickets),
        configs,
    };
    let client = world.client(&rustls::version::TLS13);
    assert_eq!(connect(&replica, &client), HandshakeKind::Full);
    assert_eq!(
        connect(&replica, &client),
        HandshakeKind::Resumed,
        "the stateful cache"
    );
}

/// A replica fed by the key Secret, as its watch would feed it.
fn watching(
    world: &World,
    secret: &Arc<MemSecret>,
    lease: &Arc<MemLease>,
) -> (Replica, SecretKeys<Arc<MemSecret>, Arc<MemLease>>) {
    let replica = world.replica();
    let keys = SecretKeys::new(
        Arc::clone(secret),
        Arc::clone(lease),
        Arc::clone(&replica.ticketer),
        Arc::clone(&replica.metrics),
        PERIOD,
    );
    (replica, keys)
}

async fn deliver(secret: &Arc<MemSecret>, to: &mut SecretKeys<Arc<MemSecret>, Arc<MemLease>>) {
    let current = secret.get().await.unwrap().unwrap();
    to.apply(crate::k8s::SecretEvent::Applied(current));
}

#[tokio::test]
async fn the_lease_holder_fills_and_rotates_the_secret_and_every_replica_follows() {
    let world = World::new();
    let (secret, lease) = (MemSecret::existing(), MemLease::existing());
    let (a, mut a_keys) = watching(&world, &secret, &lease);
    let (b, mut b_keys) = watching(&world, &secret, &lease);
    let start = SystemTime::now();

    // A takes the Lease and fills the empty Secret; B, not holding it, writes nothing.
    a_keys.check(start).await;
    let filled = secret.get().await.unwrap().unwrap();
    b_keys.check(start).await;
    assert_eq!(secret.get().await.unwrap().unwrap(), filled, "one writer");
    deliver(&secret, &mut b_keys).await;
    assert!(a.ticketer.has_keys() && b.ticketer.has_keys());

    let client = world.client(&rustls::version::TLS13);
    assert_eq!(connect(&a, &client), HandshakeKind::Full);
    // Take one ticket now and keep it for after the rotations.
    let old = world.client(&rustls::version::TLS13);
    assert_eq!(connect(&a, &old), HandshakeKind::Full);
    assert_eq!(connect(&b, &client), HandshakeKind::Resumed);

    // Not due yet: nothing changes.
    a_keys.check(start + PERIOD / 2).await;
    assert_eq!(secret.get().await.unwrap().unwrap(), filled);

    // One rotation: the old ticket's key is "previous", still accepted.
    a_keys.check(start + PERIOD).await;
    deliver(&secret, &mut b_keys).await;
    assert_eq!(
        a.metrics.tickets.key_rotations.get(),
        2,
        "the first keys, one rotation"
    );
    let fresh = world.client(&rustls::version::TLS13);
    assert_eq!(connect(&b, &fresh), HandshakeKind::Full);
    assert_eq!(
        connect(&a, &fresh),
        HandshakeKind::Resumed,
        "new current key, shared"
    );

    // Two rotations: the old ticket's key is gone; a full handshake, and the connection works.
    a_keys.check(start + PERIOD * 2).await;
    deliver(&secret, &mut b_keys).await;
    assert_eq!(connect(&b, &old), HandshakeKind::Full);
    assert_eq!(opens(&b, "unknown_key"), 1);
}

#[tokio::test]
async fn a_secret_that_fails_to_parse_keeps_the_last_good_keys() {
    let world = World::new();
    let (secret, lease) = (MemSecret::existing(), MemLease::existing());
    let (a, mut a_keys) = watching(&world, &secret, &lease);
    let (b, mut b_keys) = watching(&world, &secret, &lease);
    let now = SystemTime::now();
    a_keys.check(now).await;
    deliver(&secret, &mut b_keys).await;
    let client = world.client(&rustls::version::TLS13);
    assert_eq!(connect(&a, &client), HandshakeKind::Full);

    secret.poke(KEYS, b"not base64 at all\n");
    deliver(&secret, &mut b_keys).await;
    deliver(&secret, &mut b_keys).await;
    let failures = b
        .metrics
        .tickets
        .key_loads
        .get_or_create(&crate::metrics::Outcome { result: "failure" })
        .get();
    assert_eq!(failures, 1, "counted once per content");
    assert_eq!(
        connect(&b, &client),
        HandshakeKind::Resumed,
        "the last good keys"
    );
    // The holder does not replace keys it cannot read, even when they are due.
    let broken = secret.get().await.unwrap().unwrap();
    a_keys.check(now + PERIOD).await;
    assert_eq!(secret.get().await.unwrap().unwrap(), broken);
}

#[tokio::test]
async fn a_shared_file_resumes_across_instances_and_a_bad_rewrite_keeps_the_keys() {
    let world = World::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticket-keys");
    std::fs::write(&path, KeyText::random().unwrap().to_text()).unwrap();
    let (a, b) = (world.replica(), world.replica());
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    for r in [&a, &b] {
        FileKeys::start(
            &path,
            Arc::clone(&r.ticketer),
            Arc::clone(&r.metrics),
            Duration::from_millis(50),
            stop.clone(),
        )
        .await
        .unwrap();
    }
    let client = world.client(&rustls::version::TLS13);
    assert_eq!(connect(&a, &client), HandshakeKind::Full);
    assert_eq!(connect(&b, &client), HandshakeKind::Resumed);

    std::fs::write(&path, "garbage\n").unwrap();
    let failed = || {
        b.metrics
            .tickets
            .key_loads
            .get_or_create(&crate::metrics::Outcome { result: "failure" })
            .get()
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while failed() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the bad file is noticed");
    assert_eq!(
        connect(&b, &client),
        HandshakeKind::Resumed,
        "the last good keys"
    );

    let missing = FileKeys::start(
        &dir.path().join("none"),
        Arc::clone(&a.ticketer),
        Arc::clone(&a.metrics),
        PERIOD,
        stop.clone(),
    )
    .await;
    assert!(missing.unwrap_err().to_string().contains("none"));
}

#[tokio::test(start_paused = true)]
async fn memory_keys_rotate_every_period() {
    let metrics = Metrics::new();
    let ticketer = Ticketer::new(PERIOD, &metrics.tickets);
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    spawn_memory_rotation(
        Arc::clone(&ticketer),
        PERIOD,
        metrics.tickets.key_rotations.clone(),
        stop.clone(),
    )
    .unwrap();
    let ticket = rustls::server::ProducesTickets::encrypt(&*ticketer, b"state").unwrap();
    for rotations in 1..=2 {
        tokio::time::sleep(PERIOD).await;
        while metrics.tickets.key_rotations.get() < rotations {
            tokio::task::yield_now().await;
        }
        let opened = rustls::server::ProducesTickets::decrypt(&*ticketer, &ticket);
        assert_eq!(
            opened.is_some(),
            rotations < 2,
            "after {rotations} rotations"
        );
    }
}

#[test]
fn the_flag_values_parse_and_bad_ones_say_what_is_expected() {
    assert_eq!(
        TicketKeySource::parse("memory"),
        Ok(TicketKeySource::Memory)
    );
    assert_eq!(TicketKeySource::parse("off"), Ok(TicketKeySource::Off));
    assert_eq!(
        TicketKeySource::parse("file:/etc/keys"),
        Ok(TicketKeySource::File("/etc/keys".into()))
    );
    let secret = TicketKeySource::parse("secret:team/ws-tickets").unwrap();
    assert_eq!(
        secret,
        TicketKeySource::Secret(crate::k8s::ObjectRef::parse("team/ws-tickets").unwrap())
    );
    for bad in ["secret:Bad_Name", "file:", "memroy", ""] {
        assert!(TicketKeySource::parse(bad).is_err(), "{bad}");
    }
    assert!(
        TicketKeySource::parse("memroy")
            .unwrap_err()
            .contains("memory, secret:")
    );
}
