//! The online-store conformance suite: one set of behaviour tests, run against every backend
//! (embedded SQLite, standalone Redis, a 3-master Redis Cluster, PostgreSQL) and, on Redis, against both
//! layouts (Quiver's and Feast's). Each test gets its own store and its own servers, so tests run
//! in parallel. Every view the cases use is declared in [`catalog`], with its join keys and
//! feature types, as a registry would declare it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quiver::clock::{Clock, ManualClock, SystemClock};
use quiver::entity_key::{EntityKey, KeyPart};
use quiver::store::{
    FeatureColumn, FeatureRow, KeyColumn, RowKey, RowWrite, SharedStore, StoreCatalog, ViewSchema,
    WriteOutcome,
};
use quiver::types::{EpochMicros, ScalarType, Value, ValueType};

/// The fingerprint every row of the suite is written with.
const FINGERPRINT: u32 = 0x5eed_0001;

/// A view of the suite: its name, join keys and features.
type ViewSpec = (
    &'static str,
    &'static [(&'static str, ScalarType)],
    &'static [(&'static str, ValueType)],
);

/// The views the cases use.
fn catalog() -> Arc<StoreCatalog> {
    use ScalarType::*;
    use ValueType::{List, Scalar};
    let views: &[ViewSpec] = &[
        (
            "driver_stats",
            &[("driver_id", Int64)],
            &[
                ("conv_rate", Scalar(Float32)),
                ("missing", Scalar(Int64)),
                ("tier", Scalar(String)),
                ("trips", List(Int64)),
                ("token", Scalar(Bytes)),
                ("active", Scalar(Bool)),
                ("score", Scalar(Float64)),
            ],
        ),
        ("v", &[("id", String)], &[("value", Scalar(Int64))]),
        ("other_view", &[("id", String)], &[("value", Scalar(Int64))]),
        ("labels", &[("id", String)], &[("label", Scalar(String))]),
        (
            "race",
            &[("id", Int64)],
            &[("event", Scalar(Int64)), ("writer", Scalar(Int64))],
        ),
        (
            "bulk",
            &[("id", Int64)],
            &[
                ("n", Scalar(Int64)),
                ("name", Scalar(String)),
                ("third", Scalar(Float64)),
            ],
        ),
        (
            "trips",
            &[("rider", String), ("trip", Int64)],
            &[("n", Scalar(Int64))],
        ),
        (
            "trips_by_number",
            &[("trip", Int64), ("rider", String)],
            &[("n", Scalar(Int64))],
        ),
        ("riders", &[("rider", String)], &[("n", Scalar(Int64))]),
        (
            "pairs",
            &[("a", String), ("b", String)],
            &[("n", Scalar(Int64))],
        ),
    ];
    let mut catalog = StoreCatalog::default();
    for (view, keys, features) in views {
        catalog.insert(
            *view,
            ViewSchema {
                join_keys: keys
                    .iter()
                    .map(|(name, dtype)| KeyColumn {
                        name: Arc::from(*name),
                        dtype: *dtype,
                    })
                    .collect(),
                features: features
                    .iter()
                    .map(|(name, dtype)| FeatureColumn {
                        name: Arc::from(*name),
                        dtype: *dtype,
                    })
                    .collect(),
                schema_fingerprint: FINGERPRINT,
            },
        );
    }
    Arc::new(catalog)
}

/// A store under test, with whatever keeps its servers alive.
pub struct Fixture {
    store: SharedStore,
    /// The store's clock when the test controls it (SQLite, PostgreSQL); Redis expires keys in
    /// real time.
    clock: Option<Arc<ManualClock>>,
    _guard: Box<dyn Send + Sync>,
}

impl Fixture {
    /// "Now" as the store sees it.
    fn now(&self) -> EpochMicros {
        match &self.clock {
            Some(clock) => clock.now_micros(),
            None => SystemClock.now_micros(),
        }
    }

    /// Lets `d` pass for the store: moves the manual clock, or sleeps.
    async fn let_time_pass(&self, d: Duration) {
        match &self.clock {
            Some(clock) => clock.advance(d.as_micros() as i64),
            None => tokio::time::sleep(d).await,
        }
    }
}

mod factories {
    use std::sync::Arc;
    use std::time::Duration;

    use quiver::clock::{ManualClock, system_clock};
    use quiver::settings::HumanDuration;
    use quiver::store::OnlineStoreSpec;
    use quiver::store::postgres::PostgresOptions;
    use quiver::store::redis::{RedisLayout, RedisOptions, RedisType};
    use quiver::store::sqlite::SqliteStore;
    use quiver_tests::postgres::PostgresServer;
    use quiver_tests::redis::{RedisCluster, RedisServer};

    use super::{Fixture, catalog};

    const PROJECT: &str = "conformance";

    /// Redis options for tests: generous timeouts, as the suite checks behaviour, not latency.
    fn redis_options(
        connection_string: String,
        redis_type: RedisType,
        layout: RedisLayout,
    ) -> OnlineStoreSpec {
        let mut opts = RedisOptions::with_connection_string(connection_string, redis_type);
        opts.layout = layout;
        opts.connect_timeout = HumanDuration(Duration::from_secs(5));
        opts.command_timeout = HumanDuration(Duration::from_secs(10));
        opts.write_batch_size = 500;
        OnlineStoreSpec::new(opts)
    }

    /// A SQLite store in a temp dir, on a manual clock.
    pub async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
        let store =
            SqliteStore::open(&dir.path().join("online.db"), PROJECT, clock.clone()).unwrap();
        Fixture {
            store: Arc::new(store),
            clock: Some(clock),
            _guard: Box::new(dir),
        }
    }

    /// A PostgreSQL store on its own server, on a manual clock (expiry is decided by the time
    /// Quiver passes in, not the server's).
    pub async fn postgres() -> Fixture {
        let server = tokio::task::spawn_blocking(PostgresServer::start)
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
        let mut opts = PostgresOptions::with_connection_string(server.url());
        opts.connect_timeout = HumanDuration(Duration::from_secs(5));
        opts.command_timeout = HumanDuration(Duration::from_secs(10));
        opts.write_batch_size = 500;
        let spec = OnlineStoreSpec::new(opts);
        let store = quiver::store::open(&spec, PROJECT, &catalog(), clock.clone())
            .await
            .unwrap();
        assert_eq!(store.kind(), "postgres");
        Fixture {
            store,
            clock: Some(clock),
            _guard: Box::new(server),
        }
    }

    /// A Redis store in Quiver's layout on its own standalone `redis-server`.
    pub async fn redis() -> Fixture {
        standalone(RedisLayout::Quiver).await
    }

    /// A Redis store in Feast's layout on its own standalone `redis-server`.
    pub async fn redis_feast() -> Fixture {
        standalone(RedisLayout::Feast).await
    }

    /// A Redis Cluster store in Quiver's layout on its own 3-master cluster.
    pub async fn redis_cluster() -> Fixture {
        cluster(RedisLayout::Quiver).await
    }

    /// A Redis Cluster store in Feast's layout on its own 3-master cluster.
    pub async fn redis_cluster_feast() -> Fixture {
        cluster(RedisLayout::Feast).await
    }

    async fn standalone(layout: RedisLayout) -> Fixture {
        let server = tokio::task::spawn_blocking(RedisServer::start)
            .await
            .unwrap();
        let spec = redis_options(server.url(), RedisType::Redis, layout);
        let store = quiver::store::open(&spec, PROJECT, &catalog(), system_clock())
            .await
            .unwrap();
        assert_eq!(store.kind(), "redis");
        Fixture {
            store,
            clock: None,
            _guard: Box::new(server),
        }
    }

    async fn cluster(layout: RedisLayout) -> Fixture {
        let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
            .await
            .unwrap();
        let spec = redis_options(cluster.connection_string(), RedisType::RedisCluster, layout);
        let store = quiver::store::open(&spec, PROJECT, &catalog(), system_clock())
            .await
            .unwrap();
        assert_eq!(store.kind(), "redis_cluster");
        Fixture {
            store,
            clock: None,
            _guard: Box::new(cluster),
        }
    }
}

const T0: EpochMicros = 1_700_000_000_000_000;

fn row(event_ts: EpochMicros, created_ts: EpochMicros, values: Vec<Value>) -> FeatureRow {
    FeatureRow {
        event_ts,
        created_ts,
        schema_fingerprint: FINGERPRINT,
        values,
    }
}

fn write(view: &str, entity: &EntityKey, row: FeatureRow) -> RowWrite {
    RowWrite {
        view: Arc::from(view),
        entity: entity.clone(),
        row,
        expire_at: None,
    }
}

fn key(parts: &[KeyPart<'_>]) -> EntityKey {
    EntityKey::new(parts.iter().copied())
}

async fn read_one(store: &SharedStore, view: &str, entity: &EntityKey) -> Option<FeatureRow> {
    let got = store.read(&[RowKey { view, entity }]).await.unwrap();
    assert_eq!(got.len(), 1);
    got.into_iter().next().unwrap().map(|r| (*r).clone())
}

mod cases {
    use super::*;

    pub async fn a_written_row_reads_back(f: &Fixture) {
        let entity = key(&[KeyPart::Int(1001)]);
        let r = row(
            T0,
            T0 + 5,
            vec![
                Value::Float32(0.5),
                Value::Null,
                Value::String("gold".into()),
                Value::List(vec![Value::Int(1), Value::Int(2)]),
                Value::Bytes(vec![0, 255]),
                Value::Bool(true),
                Value::Float64(f64::NAN),
            ],
        );
        let outcome = f
            .store
            .write(&[write("driver_stats", &entity, r.clone())])
            .await
            .unwrap();
        assert_eq!(
            outcome,
            WriteOutcome {
                written: 1,
                skipped_older: 0
            }
        );
        let got = read_one(&f.store, "driver_stats", &entity).await.unwrap();
        assert_eq!((got.event_ts, got.created_ts), (r.event_ts, r.created_ts));
        assert_eq!(got.schema_fingerprint, r.schema_fingerprint);
        assert!(got.values.iter().zip(&r.values).all(|(a, b)| a.bit_eq(b)));
        assert_eq!(got.values.len(), r.values.len());
    }

    pub async fn missing_keys_read_as_none_in_request_order(f: &Fixture) {
        let present = key(&[KeyPart::Str("present")]);
        let absent = key(&[KeyPart::Str("absent")]);
        f.store
            .write(&[write("v", &present, row(T0, 0, vec![Value::Int(7)]))])
            .await
            .unwrap();
        let keys = [
            RowKey {
                view: "v",
                entity: &absent,
            },
            RowKey {
                view: "v",
                entity: &present,
            },
            RowKey {
                view: "other_view",
                entity: &present,
            },
            RowKey {
                view: "v",
                entity: &present,
            },
        ];
        let got = f.store.read(&keys).await.unwrap();
        assert_eq!(got.len(), 4);
        assert!(got[0].is_none());
        assert_eq!(got[1].as_ref().unwrap().values, vec![Value::Int(7)]);
        assert!(got[2].is_none(), "views are separate namespaces");
        assert_eq!(got[3].as_ref().unwrap().values, vec![Value::Int(7)]);
        assert!(f.store.read(&[]).await.unwrap().is_empty());
        assert_eq!(f.store.write(&[]).await.unwrap(), WriteOutcome::default());
    }

    pub async fn newer_rows_win_and_older_ones_are_counted_as_skipped(f: &Fixture) {
        let e = key(&[KeyPart::Int(42)]);
        let value = |n: i64| vec![Value::Int(n)];
        let out = f
            .store
            .write(&[write("v", &e, row(T0, 10, value(1)))])
            .await
            .unwrap();
        assert_eq!(
            out,
            WriteOutcome {
                written: 1,
                skipped_older: 0
            }
        );

        // Older event time: skipped even with a later created time.
        let out = f
            .store
            .write(&[write("v", &e, row(T0 - 1, 99, value(2)))])
            .await
            .unwrap();
        assert_eq!(
            out,
            WriteOutcome {
                written: 0,
                skipped_older: 1
            }
        );
        assert_eq!(read_one(&f.store, "v", &e).await.unwrap().values, value(1));

        // Same event and created time: the stored row stays.
        let out = f
            .store
            .write(&[write("v", &e, row(T0, 10, value(3)))])
            .await
            .unwrap();
        assert_eq!(
            out,
            WriteOutcome {
                written: 0,
                skipped_older: 1
            }
        );
        assert_eq!(read_one(&f.store, "v", &e).await.unwrap().values, value(1));

        // Same event time, later created time: replaces.
        let out = f
            .store
            .write(&[write("v", &e, row(T0, 11, value(4)))])
            .await
            .unwrap();
        assert_eq!(
            out,
            WriteOutcome {
                written: 1,
                skipped_older: 0
            }
        );
        assert_eq!(read_one(&f.store, "v", &e).await.unwrap().values, value(4));

        // A batch mixing newer and older rows counts each.
        let other = key(&[KeyPart::Int(43)]);
        let out = f
            .store
            .write(&[
                write("v", &e, row(T0 + 1, 0, value(5))),
                write("v", &e, row(T0, 12, value(6))),
                write("v", &other, row(T0, 0, value(7))),
                write("v", &other, row(T0 - 5, 0, value(8))),
            ])
            .await
            .unwrap();
        assert_eq!(
            out,
            WriteOutcome {
                written: 2,
                skipped_older: 2
            }
        );
        let got = read_one(&f.store, "v", &e).await.unwrap();
        assert_eq!(
            (got.event_ts, got.created_ts, got.values),
            (T0 + 1, 0, value(5))
        );
        assert_eq!(
            read_one(&f.store, "v", &other).await.unwrap().values,
            value(7)
        );
    }

    pub async fn timestamps_of_every_size_and_sign_compare_exactly(f: &Fixture) {
        // Stores encode timestamps compactly (Redis' records use the smallest MessagePack integer
        // that holds them, Feast's hashes protobuf varints): every pair of sizes and signs must
        // still compare as numbers, for the event time and for the created time.
        let times: [EpochMicros; 14] = [
            0,
            5,
            128,
            65_536,
            (1 << 32) - 1,
            1 << 32,
            T0,
            (1 << 53) - 1,
            -1,
            -33,
            -129,
            -40_000,
            -(1 << 31) - 1,
            -T0,
        ];
        let mut writes = Vec::new();
        let mut expected = Vec::new();
        let mut n = 0i64;
        for &stored in &times {
            for &incoming in &times {
                let e = key(&[KeyPart::Int(n)]);
                n += 1;
                writes.push((e.clone(), stored, incoming));
                expected.push((e, stored.max(incoming)));
            }
        }
        for (e, stored, _) in &writes {
            f.store
                .write(&[write("v", e, row(*stored, 0, vec![Value::Int(*stored)]))])
                .await
                .unwrap();
        }
        for (e, stored, incoming) in &writes {
            let out = f
                .store
                .write(&[write(
                    "v",
                    e,
                    row(*incoming, 0, vec![Value::Int(*incoming)]),
                )])
                .await
                .unwrap();
            assert_eq!(
                out.written,
                usize::from(incoming > stored),
                "stored {stored}, incoming {incoming}"
            );
        }
        for (e, newest) in &expected {
            let got = read_one(&f.store, "v", e).await.unwrap();
            assert_eq!(
                (got.event_ts, got.values),
                (*newest, vec![Value::Int(*newest)])
            );
        }

        // Created times of every size break ties of the event time.
        let e = key(&[KeyPart::Str("created")]);
        let mut newest = i64::MIN;
        for &created in &[T0, -1, 5, 1 << 32, -(1 << 31) - 1, (1 << 53) - 1, 0] {
            let out = f
                .store
                .write(&[write("v", &e, row(T0, created, vec![Value::Int(created)]))])
                .await
                .unwrap();
            assert_eq!(
                out.written,
                usize::from(created > newest),
                "created {created}"
            );
            newest = newest.max(created);
        }
        assert_eq!(
            read_one(&f.store, "v", &e).await.unwrap().created_ts,
            newest
        );
    }

    pub async fn a_batch_repeating_keys_leaves_the_newest_row_of_each(f: &Fixture) {
        // 50 keys, ten versions each, interleaved so that each key's versions go up and down.
        // How many intermediate versions a backend stores on the way is its own business (one
        // keeps only the newest of a batch, another applies rows in order or in parallel); the
        // newest must win, and every row must be counted once.
        let keys: Vec<EntityKey> = (0..50).map(|k| key(&[KeyPart::Int(k)])).collect();
        let mut writes = Vec::new();
        for round in 0..10i64 {
            for (k, entity) in keys.iter().enumerate() {
                let version = (round * 7 + k as i64) % 10;
                writes.push(write(
                    "v",
                    entity,
                    row(T0 + version, 0, vec![Value::Int(version)]),
                ));
            }
        }
        let out = f.store.write(&writes).await.unwrap();
        assert_eq!(out.written + out.skipped_older, 500, "{out:?}");
        assert!(out.written >= keys.len(), "{out:?}");
        for entity in &keys {
            let got = read_one(&f.store, "v", entity).await.unwrap();
            assert_eq!((got.event_ts, got.values), (T0 + 9, vec![Value::Int(9)]));
        }
    }

    pub async fn records_are_gone_after_their_expiry(f: &Fixture) {
        let e = key(&[KeyPart::Str("short-lived")]);
        let keep = key(&[KeyPart::Str("long-lived")]);
        let ttl = Duration::from_millis(800);
        let mut short = write("v", &e, row(T0, 0, vec![Value::Int(1)]));
        short.expire_at = Some(f.now() + ttl.as_micros() as i64);
        let mut long = write("v", &keep, row(T0, 0, vec![Value::Int(2)]));
        long.expire_at = Some(f.now() + 3_600_000_000);
        f.store.write(&[short, long]).await.unwrap();
        assert!(
            read_one(&f.store, "v", &e).await.is_some(),
            "not expired yet"
        );

        f.let_time_pass(ttl + Duration::from_millis(100)).await;
        // Redis expires keys in real time; give it a bounded while beyond the deadline.
        let gone = tokio::time::timeout(Duration::from_secs(5), async {
            while read_one(&f.store, "v", &e).await.is_some() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(gone.is_ok(), "the record outlived its expire_at");
        assert_eq!(
            read_one(&f.store, "v", &keep).await.unwrap().values,
            vec![Value::Int(2)]
        );

        // A newer row replaces an expired one.
        let mut again = write("v", &e, row(T0 - 10, 0, vec![Value::Int(3)]));
        again.expire_at = Some(f.now() + 3_600_000_000);
        f.store.write(&[again]).await.unwrap();
        assert_eq!(
            read_one(&f.store, "v", &e).await.unwrap().values,
            vec![Value::Int(3)]
        );

        // A row already past its expiry never becomes visible.
        let stale_key = key(&[KeyPart::Str("born-expired")]);
        let mut stale = write("v", &stale_key, row(T0, 0, vec![Value::Int(4)]));
        stale.expire_at = Some(f.now() - 1_000_000);
        let out = f.store.write(&[stale]).await.unwrap();
        assert_eq!(out.written + out.skipped_older, 1);
        assert!(read_one(&f.store, "v", &stale_key).await.is_none());
    }

    pub async fn ten_thousand_entities_write_and_read_in_one_call(f: &Fixture) {
        const N: i64 = 10_000;
        let entities: Vec<EntityKey> = (0..N).map(|i| key(&[KeyPart::Int(i)])).collect();
        let rows: Vec<RowWrite> = entities
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let i = i as i64;
                write(
                    "bulk",
                    e,
                    row(
                        T0 + i,
                        0,
                        vec![
                            Value::Int(i),
                            Value::String(format!("v{i}")),
                            Value::Float64(i as f64 / 3.0),
                        ],
                    ),
                )
            })
            .collect();
        let out = f.store.write(&rows).await.unwrap();
        assert_eq!(
            out,
            WriteOutcome {
                written: N as usize,
                skipped_older: 0
            }
        );
        let keys: Vec<RowKey<'_>> = entities
            .iter()
            .map(|e| RowKey {
                view: "bulk",
                entity: e,
            })
            .collect();
        let got = f.store.read(&keys).await.unwrap();
        assert_eq!(got.len(), N as usize);
        for (i, r) in got.iter().enumerate() {
            let r = r.as_ref().unwrap_or_else(|| panic!("entity {i} missing"));
            assert_eq!(r.event_ts, T0 + i as i64);
            assert_eq!(r.values[0], Value::Int(i as i64));
            assert_eq!(r.values[1], Value::String(format!("v{i}")));
        }
        // Writing the same rows again skips all of them.
        let out = f.store.write(&rows).await.unwrap();
        assert_eq!(
            out,
            WriteOutcome {
                written: 0,
                skipped_older: N as usize
            }
        );
    }

    pub async fn binary_and_unicode_entity_keys_are_kept_apart(f: &Fixture) {
        let parts: Vec<KeyPart<'static>> = vec![
            KeyPart::Bytes(b"{"),
            KeyPart::Bytes(b"}"),
            KeyPart::Bytes(b"{}"),
            KeyPart::Bytes(b"\0"),
            KeyPart::Bytes(b"\0\0"),
            KeyPart::Bytes(b"a:b"),
            KeyPart::Bytes(b"\0{x}:\xff\xfe"),
            KeyPart::Bytes(b""),
            KeyPart::Str(""),
            KeyPart::Str("{user}:1"),
            KeyPart::Str("🦀"),
            KeyPart::Str("🦀🦀"),
            KeyPart::Str("ключ"),
            KeyPart::Str("鍵\u{0}:{}"),
        ];
        let entities: Vec<EntityKey> = parts.iter().map(|p| key(&[*p])).collect();
        let rows: Vec<RowWrite> = entities
            .iter()
            .enumerate()
            .map(|(i, e)| write("v", e, row(T0, 0, vec![Value::Int(i as i64)])))
            .collect();
        let out = f.store.write(&rows).await.unwrap();
        assert_eq!(out.written, entities.len());
        let keys: Vec<RowKey<'_>> = entities
            .iter()
            .map(|e| RowKey {
                view: "v",
                entity: e,
            })
            .collect();
        let got = f.store.read(&keys).await.unwrap();
        for (i, r) in got.iter().enumerate() {
            assert_eq!(
                r.as_ref().map(|r| r.values.clone()),
                Some(vec![Value::Int(i as i64)]),
                "key {:?}",
                parts[i]
            );
        }
    }

    pub async fn integer_and_string_join_keys_do_not_collide(f: &Fixture) {
        let as_int = key(&[KeyPart::Int(1)]);
        let as_str = key(&[KeyPart::Str("1")]);
        let as_bytes = key(&[KeyPart::Bytes(b"1")]);
        f.store
            .write(&[
                write(
                    "labels",
                    &as_int,
                    row(T0, 0, vec![Value::String("int".into())]),
                ),
                write(
                    "labels",
                    &as_str,
                    row(T0, 0, vec![Value::String("str".into())]),
                ),
                write(
                    "labels",
                    &as_bytes,
                    row(T0, 0, vec![Value::String("bytes".into())]),
                ),
            ])
            .await
            .unwrap();
        for (entity, expected) in [(&as_int, "int"), (&as_str, "str"), (&as_bytes, "bytes")] {
            let got = read_one(&f.store, "labels", entity).await.unwrap();
            assert_eq!(got.values, vec![Value::String(expected.into())]);
        }
    }

    pub async fn composite_keys_are_distinct_per_part_and_order(f: &Fixture) {
        // Each key shape in a view declaring it (see `catalog`).
        let variants = [
            ("trips", key(&[KeyPart::Str("u1"), KeyPart::Int(7)])),
            ("trips", key(&[KeyPart::Str("u1"), KeyPart::Int(8)])),
            (
                "trips_by_number",
                key(&[KeyPart::Int(7), KeyPart::Str("u1")]),
            ),
            ("riders", key(&[KeyPart::Str("u1")])),
            ("pairs", key(&[KeyPart::Str("ab"), KeyPart::Str("c")])),
            ("pairs", key(&[KeyPart::Str("a"), KeyPart::Str("bc")])),
        ];
        let rows: Vec<RowWrite> = variants
            .iter()
            .enumerate()
            .map(|(i, (view, e))| write(view, e, row(T0, 0, vec![Value::Int(i as i64)])))
            .collect();
        assert_eq!(f.store.write(&rows).await.unwrap().written, variants.len());
        for (i, (view, e)) in variants.iter().enumerate() {
            assert_eq!(
                read_one(&f.store, view, e).await.unwrap().values,
                vec![Value::Int(i as i64)]
            );
        }
    }

    pub async fn concurrent_writers_leave_the_newest_row(f: &Fixture) {
        const WRITERS: usize = 8;
        const ROUNDS: usize = 25;
        let entities: Arc<Vec<EntityKey>> =
            Arc::new((0..16).map(|i| key(&[KeyPart::Int(i)])).collect());
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = f.store.clone();
            let entities = entities.clone();
            tasks.push(tokio::spawn(async move {
                let mut max_seen: HashMap<usize, EpochMicros> = HashMap::new();
                let mut outcome = WriteOutcome::default();
                for _ in 0..ROUNDS {
                    let rows: Vec<RowWrite> = entities
                        .iter()
                        .enumerate()
                        .map(|(i, e)| {
                            let ev = T0 + rand::random_range(0..1_000_000);
                            let m = max_seen.entry(i).or_insert(ev);
                            *m = (*m).max(ev);
                            // The value carries its own timestamps, so a torn record would show.
                            write(
                                "race",
                                e,
                                row(
                                    ev,
                                    writer as i64,
                                    vec![Value::Int(ev), Value::Int(writer as i64)],
                                ),
                            )
                        })
                        .collect();
                    outcome += store.write(&rows).await.unwrap();
                }
                (max_seen, outcome)
            }));
        }
        let mut expected: HashMap<usize, EpochMicros> = HashMap::new();
        let mut total = WriteOutcome::default();
        for task in tasks {
            let (max_seen, outcome) = task.await.unwrap();
            total += outcome;
            for (i, ev) in max_seen {
                let m = expected.entry(i).or_insert(ev);
                *m = (*m).max(ev);
            }
        }
        assert_eq!(
            total.written + total.skipped_older,
            WRITERS * ROUNDS * entities.len()
        );
        let keys: Vec<RowKey<'_>> = entities
            .iter()
            .map(|e| RowKey {
                view: "race",
                entity: e,
            })
            .collect();
        let got = f.store.read(&keys).await.unwrap();
        for (i, r) in got.iter().enumerate() {
            let r = r.as_ref().unwrap();
            assert_eq!(
                r.event_ts, expected[&i],
                "entity {i} does not hold the newest row"
            );
            assert_eq!(r.values[0], Value::Int(r.event_ts));
            assert_eq!(r.values[1], Value::Int(r.created_ts));
        }
    }

    pub async fn watermarks_are_kept_per_view(f: &Fixture) {
        assert_eq!(f.store.watermark("a").await.unwrap(), None);
        f.store.set_watermark("a", T0).await.unwrap();
        f.store.set_watermark("b", T0 + 7).await.unwrap();
        assert_eq!(f.store.watermark("a").await.unwrap(), Some(T0));
        assert_eq!(f.store.watermark("b").await.unwrap(), Some(T0 + 7));
        f.store.set_watermark("a", T0 + 100).await.unwrap();
        assert_eq!(f.store.watermark("a").await.unwrap(), Some(T0 + 100));
        assert_eq!(f.store.watermark("c").await.unwrap(), None);
    }

    pub async fn ping_answers(f: &Fixture) {
        f.store.ping().await.unwrap();
    }
}

macro_rules! conformance_suite {
    ($backend:ident) => {
        conformance_suite!(@cases $backend;
            a_written_row_reads_back,
            missing_keys_read_as_none_in_request_order,
            newer_rows_win_and_older_ones_are_counted_as_skipped,
            a_batch_repeating_keys_leaves_the_newest_row_of_each,
            timestamps_of_every_size_and_sign_compare_exactly,
            records_are_gone_after_their_expiry,
            ten_thousand_entities_write_and_read_in_one_call,
            binary_and_unicode_entity_keys_are_kept_apart,
            integer_and_string_join_keys_do_not_collide,
            composite_keys_are_distinct_per_part_and_order,
            concurrent_writers_leave_the_newest_row,
            watermarks_are_kept_per_view,
            ping_answers,
        );
    };
    (@cases $backend:ident; $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = super::factories::$backend().await;
                    super::cases::$case(&fixture).await;
                }
            )*
        }
    };
}

conformance_suite!(sqlite);
conformance_suite!(redis);
conformance_suite!(redis_cluster);
conformance_suite!(redis_feast);
conformance_suite!(redis_cluster_feast);
conformance_suite!(postgres);
