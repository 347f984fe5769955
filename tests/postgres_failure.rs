//! How the PostgreSQL online store behaves when PostgreSQL goes away, hangs, or was never there:
//! errors come back within a bounded time as `Unavailable` or `Timeout` (which serving turns into
//! 503), and the same store serves again once PostgreSQL is back, without the caller reconnecting.
//! Unlike the Redis tests' servers, a restarted PostgreSQL still holds every acknowledged write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::clock::system_clock;
use quiver::entity_key::{EntityKey, KeyPart};
use quiver::settings::HumanDuration;
use quiver::store::postgres::{PostgresOptions, PostgresStore};
use quiver::store::{FeatureRow, OnlineStore, OnlineStoreSpec, RowKey, RowWrite, StoreError};
use quiver::types::Value;
use quiver_tests::postgres::PostgresServer;
use tokio::sync::mpsc;

/// Generous bound for "the call returns": these are behaviour tests, not latency asserts.
const RETURNS_WITHIN: Duration = Duration::from_secs(5);
/// Bound for the store to find a restarted PostgreSQL again (crash recovery included).
const RECOVERS_WITHIN: Duration = Duration::from_secs(30);

fn options(url: String) -> PostgresOptions {
    let mut opts = PostgresOptions::with_connection_string(url);
    opts.connect_timeout = HumanDuration(Duration::from_millis(500));
    opts.command_timeout = HumanDuration(Duration::from_millis(500));
    opts.pool_size = 2;
    opts
}

fn row_write(entity: &EntityKey, event_ts: i64) -> RowWrite {
    RowWrite {
        view: Arc::from("v"),
        entity: entity.clone(),
        row: FeatureRow {
            event_ts,
            created_ts: 0,
            schema_fingerprint: 1,
            values: vec![Value::Int(event_ts)],
        },
        expire_at: None,
    }
}

async fn start() -> PostgresServer {
    tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
}

async fn read(store: &PostgresStore, entity: &EntityKey) -> Result<Option<i64>, StoreError> {
    let got = tokio::time::timeout(RETURNS_WITHIN, store.read(&[RowKey { view: "v", entity }]))
        .await
        .expect("a read did not return within the bound while PostgreSQL was failing")?;
    Ok(got[0].as_ref().map(|r| r.event_ts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fail_while_postgres_is_down_and_succeed_again_with_the_same_store() {
    let mut server = start().await;
    let store = PostgresStore::connect(&options(server.url()), "failure", system_clock())
        .await
        .unwrap();
    let entity = EntityKey::new([KeyPart::Str("driver-1")]);
    store.write(&[row_write(&entity, 100)]).await.unwrap();
    assert_eq!(read(&store, &entity).await.unwrap(), Some(100));

    // A read loop, as serving would run, reporting every outcome.
    let (tx, mut rx) = mpsc::unbounded_channel(); // Unbounded: the loop must never block on the test.
    let reader = {
        let (store, entity) = (store.clone(), entity.clone());
        tokio::spawn(async move {
            loop {
                let outcome = read(&store, &entity).await;
                if tx.send(outcome).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    assert!(matches!(rx.recv().await, Some(Ok(Some(100)))));

    tokio::task::block_in_place(|| server.stop());

    // The loop sees the outage as Unavailable/Timeout, each read returning within the bound.
    let failed = tokio::time::timeout(RECOVERS_WITHIN, async {
        loop {
            match rx.recv().await.expect("the read loop stopped") {
                Ok(_) => continue,
                Err(e) => break e,
            }
        }
    })
    .await
    .expect("reads kept succeeding after postgres was killed");
    assert!(failed.is_unavailable(), "unexpected error kind: {failed:?}");
    let direct = read(&store, &entity).await.unwrap_err();
    assert!(direct.is_unavailable(), "unexpected error kind: {direct:?}");
    let write = tokio::time::timeout(RETURNS_WITHIN, store.write(&[row_write(&entity, 200)]))
        .await
        .expect("a write did not return within the bound");
    assert!(write.is_err_and(|e| e.is_unavailable()));
    let ping = tokio::time::timeout(RETURNS_WITHIN, store.ping())
        .await
        .unwrap();
    assert!(ping.is_err_and(|e| e.is_unavailable()));

    // PostgreSQL comes back on the same port over the same data; the same store recovers, and
    // the write acknowledged before the crash is still there.
    tokio::task::block_in_place(|| server.restart());
    let started = Instant::now();
    loop {
        match rx.recv().await.expect("the read loop stopped") {
            Ok(found) => {
                assert_eq!(
                    found,
                    Some(100),
                    "the acknowledged write survived the crash"
                );
                break;
            }
            Err(e) => {
                assert!(e.is_unavailable(), "unexpected error kind: {e:?}");
                assert!(
                    started.elapsed() < RECOVERS_WITHIN,
                    "reads did not recover after postgres came back: {e}"
                );
            }
        }
    }
    store.ping().await.unwrap();
    let out = store.write(&[row_write(&entity, 300)]).await.unwrap();
    assert_eq!(out.written, 1);
    assert_eq!(read(&store, &entity).await.unwrap(), Some(300));
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_that_does_not_answer_in_time_is_a_timeout() {
    let server = start().await;
    let store = PostgresStore::connect(&options(server.url()), "failure", system_clock())
        .await
        .unwrap();
    let entity = EntityKey::new([KeyPart::Int(7)]);
    store.write(&[row_write(&entity, 1)]).await.unwrap();

    // Every server process is frozen: connections stay open, nothing answers.
    server.pause(true);
    let err = read(&store, &entity).await.unwrap_err();
    server.pause(false);
    assert!(
        matches!(err, StoreError::Timeout(_)),
        "expected a timeout, got {err:?}"
    );

    // Once PostgreSQL answers again, so does the store.
    let started = Instant::now();
    loop {
        match read(&store, &entity).await {
            Ok(found) => {
                assert_eq!(found, Some(1));
                break;
            }
            Err(e) => {
                assert!(e.is_unavailable(), "unexpected error kind: {e:?}");
                assert!(
                    started.elapsed() < RECOVERS_WITHIN,
                    "no recovery after the pause: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_port_nobody_listens_on_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgresql://postgres@127.0.0.1:{port}/postgres");
    let result = tokio::time::timeout(
        RETURNS_WITHIN,
        PostgresStore::connect(&options(url), "failure", system_clock()),
    )
    .await
    .expect("connect did not return within the bound");
    let err = result.err().expect("connected to nothing");
    assert!(err.is_unavailable(), "unexpected error kind: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_connection_string_is_a_configuration_error() {
    let err = PostgresStore::connect(
        &options("postgresql://localhost:notaport/db".into()),
        "p",
        system_clock(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(err.to_string().contains("connection_string"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_the_store_while_postgres_is_down_succeeds_and_it_connects_when_postgres_comes_up()
{
    let mut server = start().await;
    let url = server.url();
    tokio::task::block_in_place(|| server.stop());

    let spec = OnlineStoreSpec::new(options(url));
    let store = tokio::time::timeout(
        RETURNS_WITHIN,
        quiver::store::open(
            &spec,
            "failure",
            &quiver::store::StoreCatalog::empty(),
            system_clock(),
        ),
    )
    .await
    .expect("open returns within the bound")
    .expect("an unreachable server is not a start-up error");
    assert_eq!(store.kind(), "postgres");
    let err = store.ping().await.expect_err("not connected yet");
    assert!(err.is_unavailable(), "{err:?}");
    let entity = EntityKey::new([KeyPart::Int(7)]);
    let err = store.write(&[row_write(&entity, 1)]).await.err().unwrap();
    assert!(err.is_unavailable(), "{err:?}");

    tokio::task::block_in_place(|| server.restart());
    let deadline = Instant::now() + RECOVERS_WITHIN;
    while store.ping().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "did not connect within {RECOVERS_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = store.write(&[row_write(&entity, 5)]).await.unwrap();
    assert_eq!(out.written, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_connection_string_still_fails_at_start_up() {
    let spec = OnlineStoreSpec::new(options("postgresql://localhost:notaport/db".into()));
    let err = quiver::store::open(
        &spec,
        "p",
        &quiver::store::StoreCatalog::empty(),
        system_clock(),
    )
    .await
    .err()
    .expect("a malformed connection string is a start-up error");
    assert!(!err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("connection_string"), "{err}");
}
