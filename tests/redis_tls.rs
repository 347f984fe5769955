//! `rediss://` and Feast's `ssl=true`: the Redis store over TLS to a real redis-server, verifying
//! the server's certificate against a CA the test makes. (Its own test binary: it points
//! `SSL_CERT_FILE` at that CA for the whole process.)

use std::sync::Arc;

use quiver::entity_key::{EntityKey, KeyPart};
use quiver::store::redis::{RedisOptions, RedisType};
use quiver::store::{FeatureRow, OnlineStoreSpec, RowKey, RowWrite};
use quiver::types::Value;
use quiver_tests::redis::RedisServer;

async fn round_trip(connection_string: String, user: &str) {
    let spec = OnlineStoreSpec::new(RedisOptions::with_connection_string(
        connection_string.clone(),
        RedisType::Redis,
    ));
    let store = quiver::store::open(
        &spec,
        "tls",
        &quiver::store::StoreCatalog::empty(),
        quiver::clock::system_clock(),
    )
    .await
    .unwrap_or_else(|e| panic!("{connection_string}: {e}"));
    let entity = EntityKey::new([KeyPart::Str(user)]);
    let row = FeatureRow {
        event_ts: 1,
        created_ts: 1,
        schema_fingerprint: 7,
        values: vec![Value::String("over tls".into())],
    };
    let write = RowWrite {
        view: Arc::from("v"),
        entity: entity.clone(),
        row: row.clone(),
        expire_at: None,
    };
    assert_eq!(store.write(&[write]).await.unwrap().written, 1);
    let read = store
        .read(&[RowKey {
            view: "v",
            entity: &entity,
        }])
        .await
        .unwrap();
    assert_eq!(read[0].as_deref(), Some(&row));
}

#[tokio::test]
async fn the_redis_store_reads_and_writes_over_verified_tls() {
    let (_server, tls_port, ca) = RedisServer::start_with_tls();
    // Without trusting the test CA, the certificate is rejected: verification is on.
    let spec = OnlineStoreSpec::new(RedisOptions::with_connection_string(
        format!("rediss://127.0.0.1:{tls_port}"),
        RedisType::Redis,
    ));
    let untrusted = quiver::store::open(
        &spec,
        "tls",
        &quiver::store::StoreCatalog::empty(),
        quiver::clock::system_clock(),
    )
    .await;
    assert!(
        untrusted.is_err(),
        "a server certificate from an unknown CA must be rejected"
    );
    // SAFETY: set before any other thread of this test binary reads the environment.
    unsafe { std::env::set_var("SSL_CERT_FILE", &ca) };
    round_trip(format!("rediss://127.0.0.1:{tls_port}"), "alice").await;
    round_trip(format!("localhost:{tls_port},ssl=true"), "bob").await;
}
