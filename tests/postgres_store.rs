//! What the PostgreSQL online store does beyond the conformance suite: its schema is created once
//! and versioned even when several servers start at once, expired records are purged, writes
//! are announced to other instances with `LISTEN`/`NOTIFY`, schemas and projects keep their
//! records apart, and TLS verifies the server's certificate.

use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;
use quiver::clock::{ManualClock, system_clock};
use quiver::entity_key::{EntityKey, KeyPart};
use quiver::settings::HumanDuration;
use quiver::store::postgres::{PostgresOptions, PostgresStore, SCHEMA_VERSION};
use quiver::store::{FeatureRow, OnlineStore, RowKey, RowWrite, StoreError, StoreEvent};
use quiver::types::Value;
use quiver_tests::postgres::{PostgresServer, hand_over};
use quiver_tests::redis::make_test_certificates;

const T0: i64 = 1_700_000_000_000_000;

fn options(url: String) -> PostgresOptions {
    let mut opts = PostgresOptions::with_connection_string(url);
    opts.connect_timeout = HumanDuration(Duration::from_secs(5));
    opts.command_timeout = HumanDuration(Duration::from_secs(10));
    opts
}

fn row_write(entity: &EntityKey, event_ts: i64, expire_at: Option<i64>) -> RowWrite {
    RowWrite {
        view: Arc::from("v"),
        entity: entity.clone(),
        row: FeatureRow {
            event_ts,
            created_ts: 0,
            schema_fingerprint: 1,
            values: vec![Value::Int(event_ts)],
        },
        expire_at,
    }
}

async fn start() -> PostgresServer {
    tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
}

/// A plain connection for looking at the tables.
async fn admin(server: &PostgresServer) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

async fn read_one(store: &PostgresStore, entity: &EntityKey) -> Option<i64> {
    let got = store.read(&[RowKey { view: "v", entity }]).await.unwrap();
    got[0].as_ref().map(|r| r.event_ts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_opening_an_empty_database_at_once_create_the_schema_once() {
    let server = start().await;
    let opts = options(server.url());
    let stores = try_join_all((0..4).map(|_| PostgresStore::connect(&opts, "p", system_clock())))
        .await
        .expect("every concurrent first use succeeds");
    let versions: Vec<i32> = admin(&server)
        .await
        .query(
            "SELECT version FROM quiver.schema_version ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    let e = EntityKey::new([KeyPart::Int(1)]);
    stores[0].write(&[row_write(&e, T0, None)]).await.unwrap();
    assert_eq!(read_one(&stores[3], &e).await, Some(T0));
    // Opening again finds the schema current and changes nothing.
    PostgresStore::connect(&opts, "p", system_clock())
        .await
        .unwrap();
    assert_eq!(read_one(&stores[1], &e).await, Some(T0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_this_build_is_refused_at_open() {
    let server = start().await;
    let opts = options(server.url());
    PostgresStore::connect(&opts, "p", system_clock())
        .await
        .unwrap();
    admin(&server)
        .await
        .execute(
            "INSERT INTO quiver.schema_version (version) VALUES (99)",
            &[],
        )
        .await
        .unwrap();
    let err = PostgresStore::connect(&opts, "p", system_clock())
        .await
        .err()
        .expect("a newer schema is refused");
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(err.to_string().contains("version 99"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_records_are_purged_and_live_ones_kept() {
    let server = start().await;
    let clock = Arc::new(ManualClock::new(T0));
    let store = PostgresStore::connect(&options(server.url()), "p", clock.clone())
        .await
        .unwrap();
    let rows: Vec<RowWrite> = (0..50)
        .map(|i| {
            let e = EntityKey::new([KeyPart::Int(i)]);
            // Even entities expire in a second, odd ones in an hour; one never expires.
            let expire_at = match i {
                0 => None,
                i if i % 2 == 0 => Some(T0 + 1_000_000),
                _ => Some(T0 + 3_600_000_000),
            };
            row_write(&e, T0, expire_at)
        })
        .collect();
    assert_eq!(store.write(&rows).await.unwrap().written, 50);
    assert_eq!(store.purge_expired().await.unwrap(), 0);

    clock.advance(2_000_000);
    assert_eq!(store.purge_expired().await.unwrap(), 24);
    let left: i64 = admin(&server)
        .await
        .query_one("SELECT count(*) FROM quiver.online", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 26);
    assert_eq!(
        read_one(&store, &EntityKey::new([KeyPart::Int(0)])).await,
        Some(T0)
    );
    assert_eq!(
        read_one(&store, &EntityKey::new([KeyPart::Int(3)])).await,
        Some(T0)
    );
    assert_eq!(
        read_one(&store, &EntityKey::new([KeyPart::Int(4)])).await,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_and_projects_keep_their_records_apart() {
    let server = start().await;
    let mut other_schema = options(server.url());
    other_schema.schema = "quiver_staging".into();
    let a = PostgresStore::connect(&options(server.url()), "p", system_clock())
        .await
        .unwrap();
    let b = PostgresStore::connect(&other_schema, "p", system_clock())
        .await
        .unwrap();
    let c = PostgresStore::connect(&options(server.url()), "q", system_clock())
        .await
        .unwrap();
    let e = EntityKey::new([KeyPart::Str("same")]);
    a.write(&[row_write(&e, T0, None)]).await.unwrap();
    b.write(&[row_write(&e, T0 + 1, None)]).await.unwrap();
    assert_eq!(read_one(&a, &e).await, Some(T0));
    assert_eq!(read_one(&b, &e).await, Some(T0 + 1));
    assert_eq!(read_one(&c, &e).await, None);
    a.set_watermark("v", 5).await.unwrap();
    assert_eq!(c.watermark("v").await.unwrap(), None);
    assert_eq!(b.watermark("v").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_instance_is_announced_to_another_and_a_restart_resyncs() {
    let mut server = start().await;
    let opts = options(server.url());
    let writer = PostgresStore::connect(&opts, "p", system_clock())
        .await
        .unwrap();
    let listener = PostgresStore::connect(&opts, "p", system_clock())
        .await
        .unwrap();
    let mut notices = listener.subscribe_writes().await.unwrap().expect("notices");
    let e = EntityKey::new([KeyPart::Str("announced")]);
    // The listening connection comes up in the background: write until a notice arrives.
    let mut notice = None;
    for i in 0..100 {
        writer.write(&[row_write(&e, T0 + i, None)]).await.unwrap();
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(100), notices.recv()).await
        {
            notice = Some(event);
            break;
        }
    }
    let Some(StoreEvent::Written(notice)) = notice else {
        panic!("no write announcement arrived: {notice:?}");
    };
    assert_eq!(&*notice.view, "v");
    assert_eq!(notice.entity, e);

    // A row that loses to the stored one changes nothing and is not announced; a newer one is.
    writer.write(&[row_write(&e, T0 - 1, None)]).await.unwrap();
    writer
        .write(&[row_write(&e, T0 + 1000, None)])
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match notices.recv().await {
                Some(StoreEvent::Written(n)) if n.event_ts >= T0 + 100 => return n,
                Some(_) => continue,
                None => panic!("the subscription ended"),
            }
        }
    })
    .await
    .expect("the newer write was announced");
    assert_eq!(next.event_ts, T0 + 1000);

    // After a restart the subscription comes back and tells caches to start over.
    tokio::task::block_in_place(|| server.restart());
    let resync = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match notices.recv().await {
                Some(StoreEvent::Resync) => return,
                Some(_) => continue,
                None => panic!("the subscription ended"),
            }
        }
    })
    .await;
    assert!(resync.is_ok(), "no resync after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_verify_the_server_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let ca = make_test_certificates(certs.path());
    hand_over(certs.path());
    let file = |name: &str| certs.path().join(name).to_string_lossy().into_owned();
    let settings = [
        "ssl=on".to_string(),
        format!("ssl_cert_file={}", file("server.crt")),
        format!("ssl_key_file={}", file("server.key")),
    ];
    std::fs::set_permissions(
        certs.path().join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let server = tokio::task::spawn_blocking(move || {
        let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
        PostgresServer::start_with(&settings)
    })
    .await
    .unwrap();
    let url = format!(
        "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=require",
        server.port()
    );

    let mut trusted = options(url.clone());
    trusted.ssl_root_cert = Some(ca);
    let store = PostgresStore::connect(&trusted, "p", system_clock())
        .await
        .expect("a certificate signed by ssl_root_cert is trusted");
    let e = EntityKey::new([KeyPart::Int(1)]);
    store.write(&[row_write(&e, T0, None)]).await.unwrap();
    assert_eq!(read_one(&store, &e).await, Some(T0));
    let ssl: bool = admin(&server)
        .await
        .query_one(
            "SELECT bool_or(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE application_name = 'quiver'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "quiver's connections use TLS");

    let err = PostgresStore::connect(&options(url), "p", system_clock())
        .await
        .err()
        .expect("an unknown CA is refused");
    assert!(
        !err.is_unavailable(),
        "a certificate problem is configuration: {err:?}"
    );
    assert!(err.to_string().contains("TLS"), "{err}");
}
