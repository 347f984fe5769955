//! How the Redis online store behaves when Redis goes away, hangs, or was never there: errors come
//! back within a bounded time as `Unavailable` or `Timeout` (which serving turns into 503), and the
//! same store serves again once Redis is back, without the caller reconnecting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::clock::system_clock;
use quiver::entity_key::{EntityKey, KeyPart};
use quiver::settings::HumanDuration;
use quiver::store::redis::{RedisOptions, RedisStore, RedisType};
use quiver::store::{FeatureRow, OnlineStore, OnlineStoreSpec, RowKey, RowWrite, StoreError};
use quiver::types::Value;
use quiver_tests::redis::{RedisServer, admin};
use tokio::sync::mpsc;

/// Generous bound for "the call returns": these are behaviour tests, not latency asserts.
const RETURNS_WITHIN: Duration = Duration::from_secs(5);
/// Bound for the store to find a restarted Redis again.
const RECOVERS_WITHIN: Duration = Duration::from_secs(15);

fn options(url: String) -> RedisOptions {
    let mut opts = RedisOptions::with_connection_string(url, RedisType::Redis);
    opts.connect_timeout = HumanDuration(Duration::from_millis(500));
    opts.command_timeout = HumanDuration(Duration::from_millis(500));
    opts.connections = 2;
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

async fn read(store: &RedisStore, entity: &EntityKey) -> Result<Option<i64>, StoreError> {
    let got = tokio::time::timeout(RETURNS_WITHIN, store.read(&[RowKey { view: "v", entity }]))
        .await
        .expect("a read did not return within the bound while Redis was failing")?;
    Ok(got[0].as_ref().map(|r| r.event_ts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fail_while_redis_is_down_and_succeed_again_with_the_same_store() {
    let mut server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let store = Arc::new(
        RedisStore::connect(
            &options(server.url()),
            "failure",
            &quiver::store::StoreCatalog::default(),
            system_clock(),
        )
        .await
        .unwrap(),
    );
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
    .expect("reads kept succeeding after redis-server was killed");
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

    // Redis comes back on the same port (empty: persistence is off); the same store recovers.
    tokio::task::block_in_place(|| server.restart());
    let started = Instant::now();
    loop {
        match rx.recv().await.expect("the read loop stopped") {
            Ok(found) => {
                assert_eq!(found, None, "the restarted server holds no data");
                break;
            }
            Err(e) => {
                assert!(e.is_unavailable(), "unexpected error kind: {e:?}");
                assert!(
                    started.elapsed() < RECOVERS_WITHIN,
                    "reads did not recover after redis-server came back: {e}"
                );
            }
        }
    }
    store.ping().await.unwrap();
    // Writes work again too, script cache and all (the restarted server lost it).
    let out = store.write(&[row_write(&entity, 300)]).await.unwrap();
    assert_eq!(out.written, 1);
    assert_eq!(read(&store, &entity).await.unwrap(), Some(300));

    reader.abort();
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_does_not_answer_in_time_is_a_timeout() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let store = RedisStore::connect(
        &options(server.url()),
        "failure",
        &quiver::store::StoreCatalog::default(),
        system_clock(),
    )
    .await
    .unwrap();
    let entity = EntityKey::new([KeyPart::Int(7)]);
    store.write(&[row_write(&entity, 1)]).await.unwrap();

    // Every client's commands wait for 2 s; the store gives up after its 500 ms command timeout.
    let port = server.port();
    tokio::task::spawn_blocking(move || {
        admin::<()>(port, redis::cmd("CLIENT").arg("PAUSE").arg(2000).arg("ALL")).unwrap()
    })
    .await
    .unwrap();
    let err = read(&store, &entity).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Timeout(_)),
        "expected a timeout, got {err:?}"
    );

    // Once Redis answers again, so does the store.
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
    let result = tokio::time::timeout(
        RETURNS_WITHIN,
        RedisStore::connect(
            &options(format!("127.0.0.1:{port}")),
            "failure",
            &quiver::store::StoreCatalog::default(),
            system_clock(),
        ),
    )
    .await
    .expect("connect did not return within the bound");
    let err = result.err().expect("connected to nothing");
    assert!(err.is_unavailable(), "unexpected error kind: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_connection_string_is_a_configuration_error() {
    let err = RedisStore::connect(
        &options("redis://localhost:notaport".into()),
        "p",
        &quiver::store::StoreCatalog::default(),
        system_clock(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(err.to_string().contains("connection_string"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lost_its_script_cache_still_takes_writes() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let store = RedisStore::connect(
        &options(server.url()),
        "failure",
        &quiver::store::StoreCatalog::default(),
        system_clock(),
    )
    .await
    .unwrap();
    let port = server.port();
    tokio::task::spawn_blocking(move || {
        admin::<()>(port, redis::cmd("SCRIPT").arg("FLUSH")).unwrap()
    })
    .await
    .unwrap();
    let entities: Vec<EntityKey> = (0..20).map(|i| EntityKey::new([KeyPart::Int(i)])).collect();
    let rows: Vec<RowWrite> = entities.iter().map(|e| row_write(e, 10)).collect();
    let out = store.write(&rows).await.unwrap();
    assert_eq!((out.written, out.skipped_older), (20, 0));
    assert_eq!(read(&store, &entities[3]).await.unwrap(), Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_the_store_while_redis_is_down_succeeds_and_it_connects_when_redis_comes_up() {
    let mut server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
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
    assert_eq!(store.kind(), "redis");
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
    let spec = OnlineStoreSpec::new(options("redis://localhost:notaport".into()));
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
