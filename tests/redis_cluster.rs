//! The Redis Cluster store against a real 3-master cluster while a slot moves between masters:
//! reads and writes keep working through `ASK` (slot migrating), `TRYAGAIN` (keys of one slot split
//! between two nodes) and `MOVED` (after the new owner is announced).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use quiver::clock::system_clock;
use quiver::entity_key::{EntityKey, KeyPart};
use quiver::settings::HumanDuration;
use quiver::store::redis::{RedisOptions, RedisStore, RedisType, record_key, slot_of_key};
use quiver::store::{FeatureRow, OnlineStore, RowKey, RowWrite, WriteOutcome};
use quiver::types::Value;
use quiver_tests::redis::{RedisCluster, admin};

const PROJECT: &str = "clustered";
const VIEW: &str = "driver_stats";

fn slot_of(entity: &EntityKey) -> u16 {
    slot_of_key(&record_key(PROJECT, VIEW, entity.as_bytes()))
}

fn row_write(entity: &EntityKey, event_ts: i64) -> RowWrite {
    RowWrite {
        view: Arc::from(VIEW),
        entity: entity.clone(),
        row: FeatureRow {
            event_ts,
            created_ts: 0,
            schema_fingerprint: 9,
            values: vec![Value::Int(event_ts)],
        },
        expire_at: None,
    }
}

/// Runs an admin command against one node, on the blocking pool.
async fn admin_on(port: u16, cmd: redis::Cmd) -> redis::Value {
    tokio::task::spawn_blocking(move || admin::<redis::Value>(port, &cmd))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("admin command on {port} failed: {e}"))
}

/// A counter from `INFO <section>`, e.g. `cmdstat_asking` `calls` or `errorstat_MOVED` `count`.
async fn info_counter(port: u16, section: &str, name: &str, field: &str) -> u64 {
    let mut info = redis::cmd("INFO");
    info.arg(section);
    let redis::Value::BulkString(text) = admin_on(port, info).await else {
        panic!("unexpected INFO reply")
    };
    let text = String::from_utf8(text).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .and_then(|stats| {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        })
        .map_or(0, |n| n.parse().unwrap())
}

fn setslot(slot: u16, state: &str, node_id: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SETSLOT").arg(slot).arg(state).arg(node_id);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_keep_working_while_a_slot_migrates_between_masters() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    let ports = cluster.ports();
    // One seed is enough: the store discovers the other masters.
    let mut opts = RedisOptions::with_connection_string(
        format!("127.0.0.1:{}", ports[0]),
        RedisType::RedisCluster,
    );
    opts.command_timeout = HumanDuration(Duration::from_secs(5));
    opts.connect_timeout = HumanDuration(Duration::from_secs(5));
    let store = Arc::new(
        RedisStore::connect(
            &opts,
            PROJECT,
            &quiver::store::StoreCatalog::default(),
            system_clock(),
        )
        .await
        .unwrap(),
    );

    // Six entities that share one slot (the one that will move), and a spread of others.
    let first = EntityKey::new([KeyPart::Int(0)]);
    let slot = slot_of(&first);
    let mut entities = vec![first];
    let mut i = 1;
    while entities.len() < 6 {
        let e = EntityKey::new([KeyPart::Int(i)]);
        if slot_of(&e) == slot {
            entities.push(e);
        }
        i += 1;
    }
    entities.extend((0..40).map(|n| EntityKey::new([KeyPart::Str(&format!("other-{n}"))])));
    let entities = Arc::new(entities);
    let rows: Vec<RowWrite> = entities.iter().map(|e| row_write(e, 1)).collect();
    assert_eq!(store.write(&rows).await.unwrap().written, entities.len());

    // Readers and a writer run through the whole migration; every call must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let last_written = Arc::new(AtomicI64::new(1));
    let reader = {
        let (store, entities, stop) = (store.clone(), entities.clone(), stop.clone());
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let keys: Vec<RowKey<'_>> = entities
                    .iter()
                    .map(|e| RowKey {
                        view: VIEW,
                        entity: e,
                    })
                    .collect();
                let got = store
                    .read(&keys)
                    .await
                    .expect("a read failed during the migration");
                assert!(
                    got.iter().all(Option::is_some),
                    "a record went missing during the migration"
                );
                reads += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reads
        })
    };
    let writer = {
        let (store, entities, stop, last) = (
            store.clone(),
            entities.clone(),
            stop.clone(),
            last_written.clone(),
        );
        tokio::spawn(async move {
            let mut ts = 1;
            while !stop.load(Ordering::Relaxed) {
                ts += 1;
                // The migrating slot's entities, plus a stale row that must be skipped wherever it lands.
                let mut rows: Vec<RowWrite> =
                    entities[..6].iter().map(|e| row_write(e, ts)).collect();
                rows.push(row_write(&entities[0], ts - 1));
                let out = store
                    .write(&rows)
                    .await
                    .expect("a write failed during the migration");
                assert_eq!(
                    out,
                    WriteOutcome {
                        written: 6,
                        skipped_older: 1
                    }
                );
                last.store(ts, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let source = cluster.slot_owner(slot);
    let target = *ports.iter().find(|p| **p != source).unwrap();
    let (source_id, target_id) = (cluster.node_id(source), cluster.node_id(target));
    tokio::time::sleep(Duration::from_millis(200)).await;

    admin_on(target, setslot(slot, "IMPORTING", &source_id)).await;
    admin_on(source, setslot(slot, "MIGRATING", &target_id)).await;
    // Move the slot's keys one at a time, so for a while they are split between the two nodes.
    loop {
        let mut list = redis::cmd("CLUSTER");
        list.arg("GETKEYSINSLOT").arg(slot).arg(100);
        let redis::Value::Array(keys) = admin_on(source, list).await else {
            panic!("unexpected GETKEYSINSLOT reply")
        };
        if keys.is_empty() {
            break;
        }
        for key in keys {
            let redis::Value::BulkString(key) = key else {
                panic!("unexpected key in GETKEYSINSLOT reply: {key:?}")
            };
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(target)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(key);
            admin_on(source, migrate).await;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    for port in [target, source].into_iter().chain(ports.iter().copied()) {
        admin_on(port, setslot(slot, "NODE", &target_id)).await;
    }
    // Keep going after the topology change until a request with stale routing met MOVED
    // (bounded: a loaded machine may take a while to send one).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    tokio::time::sleep(Duration::from_millis(500)).await;
    while info_counter(source, "errorstats", "errorstat_MOVED", "count").await == 0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.await.unwrap();
    writer.await.unwrap();
    assert!(reads > 10, "the reader barely ran ({reads} reads)");
    assert_eq!(
        tokio::task::block_in_place(|| cluster.slot_owner(slot)),
        target,
        "the slot did not move"
    );

    // The store went through both redirections rather than around them.
    assert!(
        info_counter(target, "commandstats", "cmdstat_asking", "calls").await > 0,
        "no request followed an ASK redirection"
    );
    assert!(
        info_counter(source, "errorstats", "errorstat_MOVED", "count").await > 0,
        "no request met a MOVED redirection"
    );

    // The moved entities hold the writer's last rows; the others their first ones.
    let keys: Vec<RowKey<'_>> = entities
        .iter()
        .map(|e| RowKey {
            view: VIEW,
            entity: e,
        })
        .collect();
    let got = store.read(&keys).await.unwrap();
    let last = last_written.load(Ordering::Relaxed);
    for (n, r) in got.iter().enumerate() {
        let expected = if n < 6 { last } else { 1 };
        assert_eq!(r.as_ref().unwrap().event_ts, expected, "entity {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_views_of_an_entity_live_in_one_slot() {
    let entity = EntityKey::new([KeyPart::Str("rider"), KeyPart::Int(12)]);
    let slots: Vec<u16> = ["a", "b", "trips_7d"]
        .iter()
        .map(|view| slot_of_key(&record_key(PROJECT, view, entity.as_bytes())))
        .collect();
    assert!(slots.windows(2).all(|w| w[0] == w[1]));

    // And Redis agrees with the store's slot computation.
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    let key = record_key(PROJECT, "a", entity.as_bytes());
    let mut keyslot = redis::cmd("CLUSTER");
    keyslot.arg("KEYSLOT").arg(&key);
    let redis::Value::Int(slot) = admin_on(cluster.ports()[0], keyslot).await else {
        panic!("unexpected KEYSLOT reply")
    };
    assert_eq!(slot as u16, slots[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reload_the_script_on_masters_that_lost_it() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    let opts =
        RedisOptions::with_connection_string(cluster.connection_string(), RedisType::RedisCluster);
    let store = RedisStore::connect(
        &opts,
        PROJECT,
        &quiver::store::StoreCatalog::default(),
        system_clock(),
    )
    .await
    .unwrap();
    for port in cluster.ports() {
        let mut flush = redis::cmd("SCRIPT");
        flush.arg("FLUSH");
        admin_on(port, flush).await;
    }
    let rows: Vec<RowWrite> = (0..50)
        .map(|i| row_write(&EntityKey::new([KeyPart::Int(i)]), 5))
        .collect();
    assert_eq!(
        store.write(&rows).await.unwrap(),
        WriteOutcome {
            written: 50,
            skipped_older: 0
        }
    );
    assert_eq!(
        store.write(&rows).await.unwrap(),
        WriteOutcome {
            written: 0,
            skipped_older: 50
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_answers_503_while_a_master_is_down_and_200_again_after_it_restarts() {
    use quiver_tests::fixtures::{load_registry, user_registry_yaml};
    use quiver_tests::server::{TestServer, eventually};

    let mut cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store_yaml = format!(
        "  type: redis\n  redis_type: redis_cluster\n  connection_string: \"{}\"\n  command_timeout: 300ms\n  connect_timeout: 300ms\n",
        cluster.connection_string()
    );
    let registry = load_registry(dir.path(), &user_registry_yaml(&store_yaml));
    let clock = system_clock();
    let store = quiver::store::open(
        &registry.online_store,
        "test",
        &registry.store_catalog(),
        clock.clone(),
    )
    .await
    .unwrap();
    let server = TestServer::start(registry, store, clock).await;
    assert_eq!(server.get("/ready").await.0, 200);

    let victim = cluster.ports()[1];
    tokio::task::block_in_place(|| cluster.stop_master(victim));
    let (status, body) = server.get("/ready").await;
    assert_eq!(
        status, 503,
        "a master is down, its slots are not served: {body}"
    );
    assert!(
        body.contains(&victim.to_string()),
        "names the master: {body}"
    );

    tokio::task::block_in_place(|| cluster.restart_master(victim));
    assert!(
        eventually(Duration::from_secs(15), || async {
            server.get("/ready").await.0 == 200
        })
        .await,
        "ready again once the master is back"
    );
}
