//! Two writers racing on one ACME store Secret through the in-process API server (acceptance 4):
//! each write names the version it read, a 409 makes it read again and redo its change, so no
//! writer's update is ever lost. The fake server refuses every stale write, and the test reads
//! the Secret's whole history: a field that ever went back to an older value was overwritten
//! from a stale copy.

use std::sync::Arc;

use serde_json::Value;
use wss_sidecar::acme::store::{ChallengeAnswer, RenewalState, StoredCert};
use wss_sidecar::acme::{AcmeStore, SecretStore};
use wss_sidecar::k8s::client::{KubeLease, KubeSecret};

use crate::support::acme::seed_acme_store;
use crate::support::fake_api::FakeApi;

const NS: &str = "team";
const SECRET: &str = "/api/v1/namespaces/team/secrets/chat-acme";
const DIRECTORY: &str = "https://ca.test/dir";
/// Writes per writer.
const ROUNDS: usize = 25;

/// A pause of 0 to 2 ms between a writer's writes, so that the two interleave every which way.
async fn pause(round: usize, seed: usize) {
    let micros = ((round * 7919 + seed * 104_729) % 2000) as u64;
    tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
}

fn store(api: &FakeApi) -> Arc<dyn AcmeStore> {
    let client = api.client();
    SecretStore::new(
        KubeSecret::new(client.clone(), NS, "chat-acme"),
        KubeSecret::new(client.clone(), NS, "chat-acme-account"),
        KubeLease::new(client, NS, "chat-acme"),
        DIRECTORY,
        &["chat.test".to_string()],
    )
}

fn cert(round: usize) -> StoredCert {
    StoredCert {
        cert_pem: format!("round-{round}"),
        key_pem: "key".into(),
    }
}

fn answer(round: usize) -> ChallengeAnswer {
    ChallengeAnswer {
        name: "chat.test".into(),
        token: format!("token-{round}"),
        key_authorization: format!("ka-{round}"),
    }
}

/// The round each of the three fields held, version by version (-1: none yet).
fn field_values(api: &FakeApi) -> [Vec<i64>; 3] {
    use base64::Engine;
    let decode = |object: &Value, key: &str| -> Option<Value> {
        let encoded = object["data"][key].as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let mut fields = [Vec::new(), Vec::new(), Vec::new()];
    for version in api.history(SECRET) {
        let cert = version["data"]["tls.crt"].as_str().and_then(|c| {
            let pem = base64::engine::general_purpose::STANDARD.decode(c).ok()?;
            String::from_utf8(pem)
                .ok()?
                .strip_prefix("round-")?
                .parse()
                .ok()
        });
        let failures = decode(&version, "acme-state.json").and_then(|s| s["failures"].as_i64());
        let token = decode(&version, "acme-challenges.json").and_then(|c| {
            let token = c[0]["token"].as_str()?.strip_prefix("token-")?.to_string();
            token.parse().ok()
        });
        for (field, value) in fields.iter_mut().zip([cert, failures, token]) {
            field.push(value.unwrap_or(-1));
        }
    }
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_lose_no_update() {
    let api = FakeApi::start().await;
    seed_acme_store(&api, NS, "chat-acme");
    let (a, b) = (store(&api), store(&api));

    // A certain conflict first: both read version 1, a writes, then b writes based on 1.
    a.save_cert(&cert(0)).await.unwrap();
    assert_eq!(b.load_cert().await.unwrap(), Some(cert(0)));
    a.save_cert(&cert(0)).await.unwrap();
    b.save_state(&RenewalState::default()).await.unwrap();
    assert!(api.conflicts(SECRET) >= 1, "b's stale write was refused");

    // Then two writers, each changing its own parts of the store: a the certificate and the
    // challenges, b the renewal state.
    let first = tokio::spawn(async move {
        for round in 0..ROUNDS {
            a.save_cert(&cert(round)).await.unwrap();
            pause(round, 1).await;
            a.save_challenges(&[answer(round)]).await.unwrap();
        }
    });
    let second = tokio::spawn(async move {
        for round in 0..ROUNDS {
            let state = RenewalState {
                failures: u32::try_from(round).unwrap(),
                ..RenewalState::default()
            };
            b.save_state(&state).await.unwrap();
            pause(round, 2).await;
        }
    });
    first.await.unwrap();
    second.await.unwrap();

    let conflicts = api.conflicts(SECRET);
    eprintln!("{conflicts} writes refused as stale and redone");
    assert!(conflicts >= 1, "the writers did race");
    assert_eq!(
        api.unconditional_writes_to(SECRET),
        0,
        "every write named its version"
    );

    // No field ever went backwards: no write was based on a copy older than the last write.
    let last = i64::try_from(ROUNDS - 1).unwrap();
    for (field, values) in ["certificate", "state", "challenges"]
        .iter()
        .zip(field_values(&api))
    {
        let went_back = values.windows(2).find(|w| w[1] < w[0]);
        assert_eq!(
            went_back, None,
            "{field} was overwritten from a stale copy: {values:?}"
        );
        assert_eq!(values.last(), Some(&last), "{field}'s last update is kept");
    }
    let reader = store(&api);
    let failures = reader.load_state().await.unwrap().failures;
    assert_eq!(usize::try_from(failures).unwrap(), ROUNDS - 1);
    assert_eq!(
        reader.load_challenges().await.unwrap(),
        vec![answer(ROUNDS - 1)]
    );
}
