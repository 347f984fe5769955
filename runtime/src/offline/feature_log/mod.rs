//! Feature logging: sampled served rows of feature services, written as Parquet off the request
//! path, and read back by `quiver skew` and `quiver historical --from-log`.
//!
//! Layout, under a service's `logging.destination`:
//! `feature_service=<name>/date=YYYY-MM-DD/part-<first request micros>-<writer id>-<seq>.parquet`
//! (the date is the request's, UTC). A file is written as `.<name>.tmp` beside its final name,
//! synced, renamed into place and its directory synced (as pushed rows are), so a reader never sees
//! half a file. The columns are described in [`layout`] and in `docs/feature-logging.md`.
//!
//! The request path only decides sampling (a hash of the entity key against the service's rate),
//! copies a sampled row's values and hands them to a bounded queue ([`FeatureLog::submit`]); a
//! thread of its own writes files when `roll_rows` rows wait or the oldest has waited
//! `roll_interval`, and everything at [`FeatureLog::close`]. When the queue holds `queue_rows`
//! rows, new rows are dropped and counted; a lookup never waits for the log.

pub mod layout;
pub mod read;
pub mod skew;
pub mod training;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, Int32Builder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field as ArrowField, Schema, TimeUnit};
use parking_lot::Mutex;
use prometheus::IntCounter;

use self::layout::{
    EVENT_TS_SUFFIX, FEATURE_SERVICE, LogLayout, META_FEATURE_LOG, REQUEST_ID, REQUEST_TIME, ROW,
    STATUS_SUFFIX, TRANSFORM_PREFIX,
};
use super::OfflineError;
use super::columns::{arrow_type, build_column};
use super::push_writer::write_parquet_atomically;
use crate::metrics::FeatureLogMetrics;
use crate::registry::{FeatureStatus, Registry};
use crate::settings::FeatureLogSettings;
use crate::types::{EpochMicros, Value, ValueType};

/// One sampled entity row of a lookup, owned, as it goes into the log.
#[derive(Debug, Clone)]
pub struct LoggedRow {
    /// The lookup's request id (shared by the rows of one request).
    pub request_id: Arc<str>,
    /// The entity row's index in the request.
    pub row: u32,
    /// When the lookup ran.
    pub request_ts: EpochMicros,
    /// Join-key values, in [`LogLayout::join_keys`] order.
    pub keys: Vec<Value>,
    /// Request-field values, in [`LogLayout::request_fields`] order.
    pub request_fields: Vec<Value>,
    /// Per feature, in response order: the value served (null unless PRESENT), its status and
    /// event timestamp (0 when none).
    pub features: Vec<(Value, FeatureStatus, EpochMicros)>,
    /// Per logged transform, the sha256 of the module that ran (shared by the request's rows).
    pub modules: Arc<[Option<Arc<str>>]>,
}

/// Messages to the writer thread.
enum Message {
    /// Sampled rows of service `.0`.
    Rows(usize, Vec<LoggedRow>),
    /// Write every waiting row now, then answer.
    Flush(SyncSender<()>),
    /// Write every waiting row and stop.
    Close,
}

/// One logged feature service, as the request path sees it.
pub struct ServiceLog {
    /// Its columns.
    pub layout: Arc<LogLayout>,
    settings: FeatureLogSettings,
    /// An entity is sampled when the hash of its key is below this (`sample_rate × 2^64`).
    threshold: u64,
    /// Rows submitted and not yet taken by the writer: the queue's bound is on this count.
    queued: Arc<AtomicUsize>,
    sampled: IntCounter,
    dropped_full: IntCounter,
}

impl ServiceLog {
    /// Whether the entity with encoded key `key` is sampled: the same answer for the same key
    /// and rate, in every lookup and every process.
    #[inline]
    pub fn samples(&self, key: &[u8]) -> bool {
        self.threshold == u64::MAX || xxhash_rust::xxh3::xxh3_64(key) < self.threshold
    }
}

/// The feature logs of one registry: a [`ServiceLog`] per logged service and the writer thread.
pub struct FeatureLog {
    /// Indexed like `Registry::feature_services`; `None` for services that do not log.
    services: Vec<Option<ServiceLog>>,
    /// To the writer thread. Unbounded as a channel; bounded by each service's `queued` rows.
    sender: Sender<Message>,
    /// The writer thread, joined by [`FeatureLog::close`]. A blocking mutex: taken once, to join.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Prefix of this log's request ids (random per process and registry generation).
    id_prefix: u64,
    next_id: AtomicU64,
}

impl FeatureLog {
    /// Starts the log of `registry`'s services that have a `logging` section; `None` when none
    /// has.
    pub fn start(registry: &Registry, metrics: &FeatureLogMetrics) -> Option<Arc<Self>> {
        if registry
            .feature_services
            .iter()
            .all(|s| s.logging.is_none())
        {
            return None;
        }
        let mut services = Vec::new();
        let mut writers = Vec::new();
        for (i, s) in registry.feature_services.iter().enumerate() {
            let Some(settings) = &s.logging else {
                services.push(None);
                writers.push(None);
                continue;
            };
            let name = s.name.as_str();
            let layout = Arc::new(LogLayout::new(registry, i));
            let queued = Arc::new(AtomicUsize::new(0));
            writers.push(Some(ServiceWriter {
                layout: Arc::clone(&layout),
                settings: settings.clone(),
                queued: Arc::clone(&queued),
                rows: Vec::new(),
                since: None,
                written: metrics.written.with_label_values(&[name]),
                dropped_write: metrics.dropped.with_label_values(&[name, "write_error"]),
            }));
            services.push(Some(ServiceLog {
                layout,
                threshold: if settings.sample_rate >= 1.0 {
                    u64::MAX
                } else {
                    (settings.sample_rate * 2f64.powi(64)) as u64
                },
                settings: settings.clone(),
                queued,
                sampled: metrics.sampled.with_label_values(&[name]),
                dropped_full: metrics.dropped.with_label_values(&[name, "queue_full"]),
            }));
        }
        let (sender, receiver) = std::sync::mpsc::channel();
        let writer_id = format!("{:08x}", rand_u64() as u32);
        let thread = std::thread::Builder::new()
            .name("quiver-feature-log".into())
            .spawn(move || write_loop(receiver, writers, writer_id))
            .expect("spawn the feature log writer");
        Some(Arc::new(FeatureLog {
            services,
            sender,
            thread: Mutex::new(Some(thread)),
            id_prefix: rand_u64(),
            next_id: AtomicU64::new(0),
        }))
    }

    /// The log of feature service `service`, when it logs.
    #[inline]
    pub fn service(&self, service: usize) -> Option<&ServiceLog> {
        self.services.get(service).and_then(Option::as_ref)
    }

    /// A new request id: 32 hex digits, unique within the process.
    pub fn request_id(&self) -> Arc<str> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{n:016x}", self.id_prefix).into()
    }

    /// Queues sampled rows of `service` for writing; drops (and counts) them when the queue is
    /// full. Never blocks.
    pub fn submit(&self, service: usize, rows: Vec<LoggedRow>) {
        let Some(log) = self.service(service) else {
            return;
        };
        let n = rows.len();
        if n == 0 {
            return;
        }
        log.sampled.inc_by(n as u64);
        let before = log.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > log.settings.queue_rows {
            log.queued.fetch_sub(n, Ordering::AcqRel);
            log.dropped_full.inc_by(n as u64);
            return;
        }
        if self.sender.send(Message::Rows(service, rows)).is_err() {
            // The writer has stopped (the log is closed): nothing will write these rows.
            log.queued.fetch_sub(n, Ordering::AcqRel);
            log.dropped_full.inc_by(n as u64);
        }
    }

    /// Writes every row queued so far and waits until the files are in place. Blocking.
    pub fn flush(&self) {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        if self.sender.send(Message::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }

    /// Writes every queued row and stops the writer thread, waiting for it. Rows submitted after
    /// are dropped and counted. Blocking.
    pub fn close(&self) {
        let _ = self.sender.send(Message::Close);
        if let Some(thread) = self.thread.lock().take()
            && thread.join().is_err()
        {
            tracing::error!("the feature log writer panicked");
        }
    }
}

impl Drop for FeatureLog {
    fn drop(&mut self) {
        // A replaced registry's log: the writer writes what it holds and stops on its own.
        let _ = self.sender.send(Message::Close);
    }
}

/// A random 64-bit number from the process's hasher keys.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// The writer thread's state of one service.
struct ServiceWriter {
    layout: Arc<LogLayout>,
    settings: FeatureLogSettings,
    queued: Arc<AtomicUsize>,
    rows: Vec<LoggedRow>,
    since: Option<Instant>,
    written: IntCounter,
    dropped_write: IntCounter,
}

fn write_loop(receiver: Receiver<Message>, mut writers: Vec<Option<ServiceWriter>>, id: String) {
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        let wait = writers
            .iter()
            .flatten()
            .filter_map(|w| {
                w.since
                    .map(|s| (s + w.settings.roll_interval.0).saturating_duration_since(now))
            })
            .min()
            .unwrap_or(Duration::from_secs(1));
        match receiver.recv_timeout(wait) {
            Ok(Message::Rows(service, rows)) => {
                let Some(w) = writers.get_mut(service).and_then(Option::as_mut) else {
                    continue;
                };
                w.queued.fetch_sub(rows.len(), Ordering::AcqRel);
                w.since.get_or_insert_with(Instant::now);
                w.rows.extend(rows);
                if w.rows.len() >= w.settings.roll_rows {
                    w.write(&id, &mut seq);
                }
            }
            Ok(Message::Flush(ack)) => {
                writers
                    .iter_mut()
                    .flatten()
                    .for_each(|w| w.write(&id, &mut seq));
                let _ = ack.send(());
            }
            Ok(Message::Close) | Err(RecvTimeoutError::Disconnected) => {
                // Rows already in the channel were accepted from the request path: write them.
                let mut acks = Vec::new();
                while let Ok(message) = receiver.try_recv() {
                    match message {
                        Message::Rows(service, rows) => {
                            if let Some(w) = writers.get_mut(service).and_then(Option::as_mut) {
                                w.queued.fetch_sub(rows.len(), Ordering::AcqRel);
                                w.rows.extend(rows);
                            }
                        }
                        Message::Flush(ack) => acks.push(ack),
                        Message::Close => {}
                    }
                }
                writers
                    .iter_mut()
                    .flatten()
                    .for_each(|w| w.write(&id, &mut seq));
                for ack in acks {
                    let _ = ack.send(());
                }
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                for w in writers.iter_mut().flatten() {
                    if w.since
                        .is_some_and(|s| now.duration_since(s) >= w.settings.roll_interval.0)
                    {
                        w.write(&id, &mut seq);
                    }
                }
            }
        }
    }
}

impl ServiceWriter {
    /// Writes the waiting rows, one file per request date; rows that cannot be written are
    /// dropped, counted and logged.
    fn write(&mut self, writer_id: &str, seq: &mut u64) {
        self.since = None;
        if self.rows.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.rows);
        let mut by_day: BTreeMap<String, Vec<LoggedRow>> = BTreeMap::new();
        for row in rows {
            by_day.entry(day_of(row.request_ts)).or_default().push(row);
        }
        for (day, rows) in by_day {
            *seq += 1;
            match write_file(
                &self.settings.destination,
                &self.layout,
                &day,
                &rows,
                writer_id,
                *seq,
            ) {
                Ok(_) => self.written.inc_by(rows.len() as u64),
                Err(e) => {
                    self.dropped_write.inc_by(rows.len() as u64);
                    tracing::error!(
                        feature_service = %self.layout.metadata.feature_service,
                        rows = rows.len(),
                        "cannot write logged rows (dropped): {e}"
                    );
                }
            }
        }
    }
}

/// `YYYY-MM-DD` of a time (UTC).
pub fn day_of(ts: EpochMicros) -> String {
    chrono::DateTime::from_timestamp_micros(ts)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The directory of a service's log under `destination`.
pub fn service_dir(destination: &Path, service: &str) -> PathBuf {
    destination.join(format!("feature_service={service}"))
}

fn write_file(
    destination: &Path,
    layout: &LogLayout,
    day: &str,
    rows: &[LoggedRow],
    writer_id: &str,
    seq: u64,
) -> Result<PathBuf, OfflineError> {
    let dir =
        service_dir(destination, &layout.metadata.feature_service).join(format!("date={day}"));
    std::fs::create_dir_all(&dir).map_err(|e| OfflineError::Source {
        path: dir.display().to_string(),
        message: format!("cannot create the feature log directory: {e}"),
    })?;
    let first = rows.iter().map(|r| r.request_ts).min().unwrap_or(0);
    let name = format!("part-{first}-{writer_id}-{seq:06}.parquet");
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let batch = to_batch(layout, rows)?;
    write_parquet_atomically(&tmp, &path, &batch)?;
    Ok(path)
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// A string column with one value per row (no copy per cell).
fn strings<'r>(rows: &'r [LoggedRow], get: impl Fn(&'r LoggedRow) -> Option<&'r str>) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
    for r in rows {
        b.append_option(get(r));
    }
    Arc::new(b.finish())
}

/// The rows as one Arrow batch with the layout's columns and metadata.
pub fn to_batch(layout: &LogLayout, rows: &[LoggedRow]) -> Result<RecordBatch, OfflineError> {
    let n = rows.len();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let utf8 = |name: &str| ArrowField::new(name, DataType::Utf8, true);
    fields.push(utf8(REQUEST_ID));
    columns.push(strings(rows, |r| Some(&r.request_id)));
    let mut row_index = Int32Builder::with_capacity(n);
    for r in rows {
        row_index.append_value(r.row as i32);
    }
    fields.push(ArrowField::new(ROW, DataType::Int32, false));
    columns.push(Arc::new(row_index.finish()));
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    for r in rows {
        ts.append_value(r.request_ts);
    }
    fields.push(ArrowField::new(REQUEST_TIME, timestamp_type(), false));
    columns.push(Arc::new(ts.finish()));
    fields.push(utf8(FEATURE_SERVICE));
    columns.push(Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(layout.metadata.feature_service.as_str(), n),
    )));
    for (k, jk) in layout.join_keys.iter().enumerate() {
        let t = ValueType::Scalar(jk.dtype);
        fields.push(ArrowField::new(jk.name.as_str(), arrow_type(t), true));
        columns.push(build_column(t, rows.iter().map(|r| &r.keys[k])));
    }
    for (k, (name, t)) in layout.request_fields.iter().enumerate() {
        fields.push(ArrowField::new(name, arrow_type(*t), true));
        columns.push(build_column(*t, rows.iter().map(|r| &r.request_fields[k])));
    }
    for (k, (feature, t)) in layout
        .metadata
        .features
        .iter()
        .zip(&layout.feature_types)
        .enumerate()
    {
        fields.push(ArrowField::new(&feature.column, arrow_type(*t), true));
        columns.push(build_column(*t, rows.iter().map(|r| &r.features[k].0)));
        fields.push(utf8(&format!("{}{STATUS_SUFFIX}", feature.column)));
        columns.push(strings(rows, |r| Some(r.features[k].1.as_str())));
        let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        for r in rows {
            let ts = r.features[k].2;
            b.append_option((ts != 0).then_some(ts));
        }
        fields.push(ArrowField::new(
            format!("{}{EVENT_TS_SUFFIX}", feature.column),
            timestamp_type(),
            true,
        ));
        columns.push(Arc::new(b.finish()));
    }
    for (k, transform) in layout.metadata.transforms.iter().enumerate() {
        fields.push(utf8(&format!("{TRANSFORM_PREFIX}{transform}")));
        columns.push(strings(rows, |r| {
            r.modules.get(k).and_then(|m| m.as_deref())
        }));
    }
    let metadata = std::collections::HashMap::from([(
        META_FEATURE_LOG.to_string(),
        layout.metadata_json.clone(),
    )]);
    let schema = Schema::new_with_metadata(fields, metadata);
    RecordBatch::try_new(Arc::new(schema), columns)
        .map_err(|e| OfflineError::Other(format!("cannot build a feature log batch: {e}")))
}
