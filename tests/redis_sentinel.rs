//! `redis_type: redis_sentinel` against a real primary, replica and sentinels: the store finds
//! the primary through the sentinels, and after the primary dies and Sentinel promotes the replica,
//! the same store (no restart) reads what was written before and takes new writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::clock::system_clock;
use quiver::entity_key::{EntityKey, KeyPart};
use quiver::settings::HumanDuration;
use quiver::store::redis::{RedisOptions, RedisType};
use quiver::store::{FeatureRow, OnlineStoreSpec, RowKey, RowWrite, SharedStore, StoreError};
use quiver::types::Value;
use quiver_tests::redis::RedisSentinelGroup;

/// Bound for the failover itself (down after 1 s, then election and promotion).
const FAILOVER_WITHIN: Duration = Duration::from_secs(30);
/// Bound for the store to follow the new primary once Sentinel names it.
const FOLLOWS_WITHIN: Duration = Duration::from_secs(15);

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

async fn read(store: &SharedStore, entity: &EntityKey) -> Result<Option<i64>, StoreError> {
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        store.read(&[RowKey { view: "v", entity }]),
    )
    .await
    .expect("a read must return within a bounded time")?;
    Ok(got[0].as_ref().map(|r| r.event_ts))
}

async fn open(group: &RedisSentinelGroup) -> SharedStore {
    let mut opts =
        RedisOptions::with_connection_string(group.connection_string(), RedisType::RedisSentinel);
    opts.sentinel_master = RedisSentinelGroup::MASTER_NAME.into();
    opts.connect_timeout = HumanDuration(Duration::from_millis(500));
    opts.command_timeout = HumanDuration(Duration::from_millis(500));
    quiver::store::open(
        &OnlineStoreSpec::new(opts),
        "sentinel",
        &quiver::store::StoreCatalog::empty(),
        system_clock(),
    )
    .await
    .expect("open through the sentinels")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_work_through_the_new_primary_after_a_sentinel_failover() {
    let mut group = tokio::task::spawn_blocking(|| RedisSentinelGroup::start(2))
        .await
        .unwrap();
    let store = open(&group).await;
    assert_eq!(store.kind(), "redis_sentinel");
    let before = EntityKey::new([KeyPart::Int(1)]);
    let out = store.write(&[row_write(&before, 10)]).await.unwrap();
    assert_eq!(out.written, 1);
    assert_eq!(read(&store, &before).await.unwrap(), Some(10));
    store.ping().await.unwrap();

    tokio::task::block_in_place(|| {
        group.kill_primary();
        group.wait_for_failover(FAILOVER_WITHIN);
    });

    // Bounded failures while the store notices the move, then everything works again.
    let after = EntityKey::new([KeyPart::Int(2)]);
    let deadline = Instant::now() + FOLLOWS_WITHIN;
    let mut failures = 0;
    loop {
        let attempt = async {
            store.ping().await?;
            store.write(&[row_write(&after, 20)]).await?;
            Ok::<_, StoreError>((read(&store, &before).await?, read(&store, &after).await?))
        };
        match attempt.await {
            Ok(found) => {
                assert_eq!(found, (Some(10), Some(20)), "the new primary has both rows");
                break;
            }
            Err(e) => {
                assert!(
                    e.is_unavailable(),
                    "failures during a failover are 503s: {e:?}"
                );
                failures += 1;
                assert!(
                    Instant::now() < deadline,
                    "the store did not follow the new primary within {FOLLOWS_WITHIN:?} ({failures} failures): {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Consecutive requests all succeed on the new primary.
    for i in 0..20 {
        store.write(&[row_write(&after, 21 + i)]).await.unwrap();
        assert_eq!(read(&store, &after).await.unwrap(), Some(21 + i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_sentinel_master_is_a_configuration_error() {
    let mut opts =
        RedisOptions::with_connection_string("127.0.0.1:26379", RedisType::RedisSentinel);
    opts.sentinel_master = " ".into();
    let spec = OnlineStoreSpec::new(opts);
    let problems = spec
        .checked(std::path::Path::new("."))
        .expect_err("an empty sentinel_master is rejected");
    assert!(
        problems
            .iter()
            .any(|p| p.to_string() == "sentinel_master: must not be empty"),
        "{problems:?}"
    );
}
