//! Where offline data lives: a local path or an object-store URL (`s3://bucket/prefix/`), the
//! Parquet files below it, and reading and writing them.
//!
//! Object storage goes through the `object_store` crate (the abstraction arrow, parquet and
//! DataFusion share). Reads are ranged: a file's footer, then only the column chunks of the
//! row groups a scan needs, fetched by parquet's async reader; its footer is fetched once per
//! run and kept with the [`DataFile`]. Requests are bounded per bucket
//! (`offline_store.max_concurrent_requests`) and retried with exponential backoff. Writes go to a
//! local temporary file first and become one object in a single upload, so a reader sees a
//! complete object or none.
//!
//! The offline engine is synchronous (it runs on its own threads or the blocking pool); object
//! I/O runs on a small runtime of its own ([`io_runtime`]) and is awaited from those threads.
//!
//! Credentials never appear in messages: every error from a store passes through
//! [`Redactor`], which knows the keys that store was built with.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use futures::future::BoxFuture;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::limit::LimitStore;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, PutPayload, RetryConfig};
use parking_lot::Mutex;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::async_reader::{
    AsyncFileReader, ParquetObjectReader, ParquetRecordBatchStreamBuilder,
};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::schema::types::SchemaDescriptor;

use crate::settings::OfflineStoreSettings;
use crate::types::EpochMicros;

/// URL schemes read as S3 (`s3a://` is what Spark and Hadoop write).
const S3_SCHEMES: [&str; 2] = ["s3://", "s3a://"];

/// The runtime object I/O runs on: two worker threads, started on first use.
pub fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("quiver-object-io")
            .enable_all()
            .build()
            .expect("the object I/O runtime starts")
    })
}

/// Runs `future` on [`io_runtime`] and waits for it. Callable from any thread, inside another
/// runtime or not (it blocks the calling thread, so async callers use the blocking pool).
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match futures::executor::block_on(io_runtime().spawn(future)) {
        Ok(out) => out,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A failure reading or writing offline data, naming the file, path or URL (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct StorageError {
    /// The file, path or URL.
    pub location: String,
    /// What went wrong.
    pub message: String,
}

/// Replaces the credentials a store was built with by `***` in messages.
#[derive(Default)]
pub struct Redactor {
    // Written when a store is built, read by every error message; never held across I/O.
    secrets: Mutex<Vec<String>>,
}

impl Redactor {
    fn add(&self, secret: &str) {
        if secret.len() >= 4 {
            let mut secrets = self.secrets.lock();
            if !secrets.iter().any(|s| s == secret) {
                secrets.push(secret.to_string());
            }
        }
    }

    /// `message` with every known secret replaced.
    pub fn redact(&self, message: impl fmt::Display) -> String {
        let mut message = message.to_string();
        for secret in self.secrets.lock().iter() {
            if message.contains(secret.as_str()) {
                message = message.replace(secret.as_str(), "***");
            }
        }
        message
    }
}

/// A place offline data is read from or written to.
#[derive(Clone)]
pub enum Location {
    /// A local path (a file, a directory or a glob).
    Local(PathBuf),
    /// An object or prefix in an object store.
    Object(ObjectLocation),
}

/// An object, prefix or glob in a bucket.
#[derive(Clone)]
pub struct ObjectLocation {
    /// `s3://bucket`, for messages.
    bucket_url: Arc<str>,
    /// The key (or prefix, or glob) within the bucket, without a leading `/`.
    key: String,
    store: Arc<dyn ObjectStore>,
    redactor: Arc<Redactor>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Object(o) => write!(f, "{}/{}", o.bucket_url, o.key),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Location {
    /// True for a URL of an object store.
    pub fn is_object(&self) -> bool {
        matches!(self, Location::Object(_))
    }

    /// The local path, if local.
    pub fn as_local(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::Object(_) => None,
        }
    }

    /// `self/name`.
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.join(name)),
            Location::Object(o) => {
                let base = o.key.trim_end_matches('/');
                let key = if base.is_empty() {
                    name.to_string()
                } else {
                    format!("{base}/{name}")
                };
                Location::Object(ObjectLocation { key, ..o.clone() })
            }
        }
    }

    fn error(&self, message: impl fmt::Display) -> StorageError {
        let message = match self {
            Location::Local(_) => message.to_string(),
            Location::Object(o) => o.redactor.redact(message),
        };
        StorageError {
            location: self.to_string(),
            message,
        }
    }

    /// The Parquet files at this location, sorted: the file itself, every `*.parquet` below a
    /// directory or prefix (names starting with `.` or `_`, such as in-progress writes, are
    /// skipped), or a glob's matches. A missing file or object is an error; a directory or
    /// prefix with no files gives none.
    pub fn list_parquet(&self) -> Result<Vec<DataFile>, StorageError> {
        // Sorted by path (component by component) or by key: the scan order that breaks exact
        // ties between rows.
        Ok(match self {
            Location::Local(path) => {
                let mut paths = list_local(path)?;
                paths.sort();
                paths
                    .into_iter()
                    .map(|p| DataFile::new(Location::Local(p), None))
                    .collect()
            }
            Location::Object(o) => {
                let mut files = self.list_objects(o)?;
                files.sort_by(|a, b| a.display.cmp(&b.display));
                files
            }
        })
    }

    fn list_objects(&self, o: &ObjectLocation) -> Result<Vec<DataFile>, StorageError> {
        let file = |key: String, size: u64| {
            DataFile::new(
                Location::Object(ObjectLocation { key, ..o.clone() }),
                Some(size),
            )
        };
        if let Some(glob_at) = o.key.find(['*', '?', '[']) {
            let pattern =
                glob::Pattern::new(&o.key).map_err(|e| self.error(format!("invalid glob: {e}")))?;
            let prefix = o.key[..glob_at].rsplit_once('/').map(|(p, _)| p);
            let options = glob::MatchOptions {
                require_literal_separator: true,
                ..Default::default()
            };
            return Ok(self
                .list_prefix(o, prefix)?
                .into_iter()
                .filter(|(key, _)| pattern.matches_with(key, options))
                .map(|(key, size)| file(key, size))
                .collect());
        }
        if o.key.ends_with(".parquet") {
            let store = Arc::clone(&o.store);
            let path = ObjectPath::from(o.key.as_str());
            let meta = block_on(async move { store.head(&path).await }).map_err(|e| match e {
                object_store::Error::NotFound { .. } => self.error("no such object"),
                e => self.error(format!("cannot read: {e}")),
            })?;
            return Ok(vec![file(o.key.clone(), meta.size)]);
        }
        let prefix = o.key.trim_end_matches('/');
        Ok(self
            .list_prefix(o, (!prefix.is_empty()).then_some(prefix))?
            .into_iter()
            .filter(|(key, _)| {
                let relative = &key[prefix.len()..];
                key.ends_with(".parquet")
                    && !relative
                        .split('/')
                        .any(|part| part.starts_with('.') || part.starts_with('_'))
            })
            .map(|(key, size)| file(key, size))
            .collect())
    }

    /// Every object below `prefix` (a directory-like prefix, without its trailing `/`), with
    /// its size.
    fn list_prefix(
        &self,
        o: &ObjectLocation,
        prefix: Option<&str>,
    ) -> Result<Vec<(String, u64)>, StorageError> {
        let store = Arc::clone(&o.store);
        let prefix = prefix.map(ObjectPath::from);
        block_on(async move {
            let mut out = Vec::new();
            let mut listing = store.list(prefix.as_ref());
            while let Some(meta) = listing.next().await {
                let meta = meta?;
                out.push((meta.location.to_string(), meta.size));
            }
            Ok::<_, object_store::Error>(out)
        })
        .map_err(|e| self.error(format!("cannot list: {e}")))
    }

    /// Writes the local file `local` as this object (or copies it to this path), whole: a
    /// reader sees the complete file or nothing. An object is uploaded in one request, or in
    /// parts completed only after the last one succeeds (and aborted otherwise).
    pub fn upload(&self, local: &Path) -> Result<(), StorageError> {
        match self {
            Location::Local(path) => {
                std::fs::copy(local, path).map_err(|e| self.error(format!("cannot write: {e}")))?;
                Ok(())
            }
            Location::Object(o) => {
                let store = Arc::clone(&o.store);
                let path = ObjectPath::from(o.key.as_str());
                let local = local.to_path_buf();
                block_on(async move { upload_file(store, path, local).await })
                    .map_err(|e| self.error(format!("cannot write: {e}")))
            }
        }
    }

    /// Writes `bytes` as this object in one request: it appears whole or not at all.
    pub fn put(&self, bytes: Vec<u8>) -> Result<(), StorageError> {
        match self {
            Location::Local(path) => {
                std::fs::write(path, bytes).map_err(|e| self.error(format!("cannot write: {e}")))
            }
            Location::Object(o) => {
                let store = Arc::clone(&o.store);
                let path = ObjectPath::from(o.key.as_str());
                block_on(async move { store.put(&path, PutPayload::from(bytes)).await })
                    .map(|_| ())
                    .map_err(|e| self.error(format!("cannot write: {e}")))
            }
        }
    }

    /// Whether the object or file exists.
    pub fn exists(&self) -> Result<bool, StorageError> {
        match self {
            Location::Local(path) => Ok(path.exists()),
            Location::Object(o) => {
                let store = Arc::clone(&o.store);
                let path = ObjectPath::from(o.key.as_str());
                match block_on(async move { store.head(&path).await }) {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(self.error(format!("cannot read: {e}"))),
                }
            }
        }
    }
}

/// Above this size a file is uploaded in parts.
const MULTIPART_THRESHOLD: u64 = 64 << 20;
/// Size of one part of a multipart upload.
const PART_SIZE: usize = 16 << 20;

async fn upload_file(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    local: PathBuf,
) -> Result<(), object_store::Error> {
    let io = |e: std::io::Error| object_store::Error::Generic {
        store: "local",
        source: Box::new(e),
    };
    let size = tokio::fs::metadata(&local).await.map_err(io)?.len();
    if size <= MULTIPART_THRESHOLD {
        let bytes = tokio::fs::read(&local).await.map_err(io)?;
        store.put(&path, PutPayload::from(bytes)).await?;
        return Ok(());
    }
    let upload = store.put_multipart(&path).await?;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let result: Result<(), object_store::Error> = async {
        use tokio::io::AsyncReadExt;
        let mut file = tokio::fs::File::open(&local).await.map_err(io)?;
        let mut buf = vec![0u8; PART_SIZE];
        loop {
            let n = file.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            // At most a few parts in flight: bounded memory.
            writer.wait_for_capacity(4).await?;
            writer.write(&buf[..n]);
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => writer.finish().await.map(|_| ()),
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

fn list_local(path: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let spec = path.to_string_lossy();
    let error = |message: String| StorageError {
        location: path.display().to_string(),
        message,
    };
    if spec.contains(['*', '?', '[']) {
        Ok(glob::glob(&spec)
            .map_err(|e| error(format!("invalid glob: {e}")))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect())
    } else if path.is_dir() {
        let mut out = Vec::new();
        collect_parquet(path, &mut out)?;
        Ok(out)
    } else if path.is_file() {
        Ok(vec![path.to_path_buf()])
    } else {
        Err(error("no such file or directory".into()))
    }
}

fn collect_parquet(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), StorageError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError {
        location: dir.display().to_string(),
        message: e.to_string(),
    })?;
    for entry in entries.flatten() {
        let p = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if p.is_dir() {
            collect_parquet(&p, out)?;
        } else if name.ends_with(".parquet") {
            out.push(p);
        }
    }
    Ok(())
}

/// One Parquet file of offline data, with its footer once read.
#[derive(Clone)]
pub struct DataFile {
    location: Location,
    /// The size, when listing told it (objects) or once a HEAD request did.
    size: Arc<OnceLock<u64>>,
    /// Bytes read from storage so far (footers and column chunks), over every clone.
    bytes_read: Arc<AtomicU64>,
    /// The time range its hive partition (`date=`, `year=/month=/day=`) covers, if any.
    partition: Option<(EpochMicros, EpochMicros)>,
    // The footer is read once per file and shared by every scan of it.
    metadata: Arc<OnceLock<ArrowReaderMetadata>>,
    display: Arc<str>,
}

impl fmt::Display for DataFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for DataFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl DataFile {
    /// A file at `location` (of `size` bytes, when known).
    pub fn new(location: Location, size: Option<u64>) -> Self {
        let display: Arc<str> = location.to_string().into();
        let known = OnceLock::new();
        if let Some(size) = size {
            let _ = known.set(size);
        }
        DataFile {
            partition: hive_partition_range(&display),
            location,
            size: Arc::new(known),
            bytes_read: Arc::new(AtomicU64::new(0)),
            metadata: Arc::new(OnceLock::new()),
            display,
        }
    }

    /// A local file.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        DataFile::new(Location::Local(path.into()), None)
    }

    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Bytes read from storage so far: footers and column chunks (local reads include the
    /// read-ahead of buffered readers).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// The time range (inclusive, UTC) its hive partition directories cover, if its path has
    /// any: `date=YYYY-MM-DD`, or `year=YYYY[/month=MM[/day=DD]]`.
    pub fn partition_range(&self) -> Option<(EpochMicros, EpochMicros)> {
        self.partition
    }

    /// An error about this file.
    pub fn error(&self, message: impl fmt::Display) -> StorageError {
        self.location.error(message)
    }

    /// The footer: schema, row groups and their statistics. Read once.
    pub fn metadata(&self) -> Result<&ArrowReaderMetadata, StorageError> {
        if let Some(m) = self.metadata.get() {
            return Ok(m);
        }
        let loaded = match &self.location {
            Location::Local(path) => {
                let file = File::open(path).map_err(|e| self.error(format!("cannot open: {e}")))?;
                let file = CountingFile {
                    file,
                    bytes: Arc::clone(&self.bytes_read),
                };
                ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
                    .map_err(|e| self.error(format!("not a readable Parquet file: {e}")))?
            }
            Location::Object(o) => {
                let mut reader = self.object_reader(o)?;
                block_on(async move {
                    ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new()).await
                })
                .map_err(|e| {
                    if is_not_found(&e) {
                        self.error("no such object")
                    } else {
                        self.error(format!("not a readable Parquet file: {e}"))
                    }
                })?
            }
        };
        let _ = self.metadata.set(loaded);
        Ok(self.metadata.get().expect("just set"))
    }

    /// A reader of the object that counts the bytes it fetches. Learns the object's size with
    /// a HEAD request when listing did not tell it.
    fn object_reader(&self, o: &ObjectLocation) -> Result<CountingObjectReader, StorageError> {
        let path = ObjectPath::from(o.key.as_str());
        let size = match self.size.get() {
            Some(&size) => size,
            None => {
                let store = Arc::clone(&o.store);
                let head = path.clone();
                let size = block_on(async move { store.head(&head).await })
                    .map_err(|e| match e {
                        object_store::Error::NotFound { .. } => self.error("no such object"),
                        e => self.error(format!("cannot read: {e}")),
                    })?
                    .size;
                let _ = self.size.set(size);
                size
            }
        };
        Ok(CountingObjectReader {
            inner: ParquetObjectReader::new(Arc::clone(&o.store), path)
                .with_runtime(io_runtime().handle().clone())
                .with_file_size(size),
            size,
            bytes: Arc::clone(&self.bytes_read),
        })
    }

    /// Opens the file for reading, with its footer parsed. Fails naming the file when it cannot
    /// be opened or is not Parquet.
    pub fn open(&self) -> Result<ParquetInput<'_>, StorageError> {
        let metadata = self.metadata()?.clone();
        Ok(ParquetInput {
            file: self,
            metadata,
        })
    }
}

/// Whether a Parquet error is an object store's "not found".
fn is_not_found(e: &parquet::errors::ParquetError) -> bool {
    match e {
        parquet::errors::ParquetError::External(inner) => matches!(
            inner.downcast_ref::<object_store::Error>(),
            Some(object_store::Error::NotFound { .. })
        ),
        _ => false,
    }
}

/// An opened Parquet file: its footer, and readers of parts of it.
pub struct ParquetInput<'f> {
    file: &'f DataFile,
    metadata: ArrowReaderMetadata,
}

/// What to read of a file: columns, row groups and the batch size.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The columns (leaves or roots, as [`ProjectionMask`] says).
    pub projection: ProjectionMask,
    /// The row groups; all when `None`.
    pub row_groups: Option<Vec<usize>>,
    /// Rows per batch.
    pub batch_rows: usize,
}

/// Batches read from a file; an error names the file.
pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch, StorageError>> + Send>;

impl ParquetInput<'_> {
    /// The file's Parquet metadata.
    pub fn metadata(&self) -> &Arc<ParquetMetaData> {
        self.metadata.metadata()
    }

    /// The file's Arrow schema.
    pub fn schema(&self) -> &SchemaRef {
        self.metadata.schema()
    }

    /// The file's Parquet schema (for projections).
    pub fn parquet_schema(&self) -> &SchemaDescriptor {
        self.metadata.metadata().file_metadata().schema_descr()
    }

    /// Reads part of the file. Local files are read on the calling thread; objects are fetched
    /// (only the column chunks of the row groups read) and decoded on [`io_runtime`], at most
    /// two batches ahead of the caller.
    pub fn read(self, options: ReadOptions) -> Result<Batches, StorageError> {
        let file = self.file.clone();
        match &self.file.location {
            Location::Local(path) => {
                let f = File::open(path).map_err(|e| file.error(format!("cannot open: {e}")))?;
                let f = CountingFile {
                    file: f,
                    bytes: Arc::clone(&file.bytes_read),
                };
                let mut builder =
                    ParquetRecordBatchReaderBuilder::new_with_metadata(f, self.metadata)
                        .with_projection(options.projection)
                        .with_batch_size(options.batch_rows);
                if let Some(groups) = options.row_groups {
                    builder = builder.with_row_groups(groups);
                }
                let reader = builder
                    .build()
                    .map_err(|e| file.error(format!("cannot read: {e}")))?;
                Ok(Box::new(reader.map(move |batch| {
                    batch.map_err(|e| file.error(format!("cannot read: {e}")))
                })))
            }
            Location::Object(o) => {
                let reader = file.object_reader(o)?;
                let mut builder =
                    ParquetRecordBatchStreamBuilder::new_with_metadata(reader, self.metadata)
                        .with_projection(options.projection)
                        .with_batch_size(options.batch_rows);
                if let Some(groups) = options.row_groups {
                    builder = builder.with_row_groups(groups);
                }
                let mut stream = builder
                    .build()
                    .map_err(|e| file.error(format!("cannot read: {e}")))?;
                // Bounded: the fetching task runs at most two batches ahead of the reader.
                let (tx, rx) = tokio::sync::mpsc::channel(2);
                io_runtime().spawn(async move {
                    while let Some(batch) = stream.next().await {
                        let failed = batch.is_err();
                        if tx.send(batch).await.is_err() || failed {
                            break;
                        }
                    }
                });
                Ok(Box::new(ObjectBatches { rx, file }))
            }
        }
    }
}

/// A local Parquet file that counts the bytes read from it.
struct CountingFile {
    file: File,
    bytes: Arc<AtomicU64>,
}

impl parquet::file::reader::Length for CountingFile {
    fn len(&self) -> u64 {
        parquet::file::reader::Length::len(&self.file)
    }
}

impl parquet::file::reader::ChunkReader for CountingFile {
    type T = std::io::BufReader<CountingRead>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use std::io::Seek;
        let mut file = self.file.try_clone()?;
        file.seek(std::io::SeekFrom::Start(start))?;
        Ok(std::io::BufReader::new(CountingRead {
            file,
            bytes: Arc::clone(&self.bytes),
        }))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let bytes = parquet::file::reader::ChunkReader::get_bytes(&self.file, start, length)?;
        self.bytes.fetch_add(length as u64, Ordering::Relaxed);
        Ok(bytes)
    }
}

/// A read of a local file that counts its bytes.
struct CountingRead {
    file: File,
    bytes: Arc<AtomicU64>,
}

impl std::io::Read for CountingRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::io::Read::read(&mut self.file, buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An object's ranged reader that counts the bytes it fetches, footer included.
struct CountingObjectReader {
    inner: ParquetObjectReader,
    size: u64,
    bytes: Arc<AtomicU64>,
}

/// The tail fetched first when reading a footer: most footers fit, so one request does.
const FOOTER_PREFETCH: usize = 64 << 10;

impl AsyncFileReader for CountingObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        self.bytes
            .fetch_add(range.end - range.start, Ordering::Relaxed);
        self.inner.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        self.bytes.fetch_add(total, Ordering::Relaxed);
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(FOOTER_PREFETCH))
                .load_and_finish(&mut *self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}

struct ObjectBatches {
    rx: tokio::sync::mpsc::Receiver<Result<RecordBatch, parquet::errors::ParquetError>>,
    file: DataFile,
}

impl Iterator for ObjectBatches {
    type Item = Result<RecordBatch, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        futures::executor::block_on(self.rx.recv())
            .map(|batch| batch.map_err(|e| self.file.error(format!("cannot read: {e}"))))
    }
}

/// Opens offline locations for one configuration: local paths as they are, URLs through one
/// store per bucket, built on first use from `offline_store` and the AWS environment.
pub struct OfflineStorage {
    settings: OfflineStoreSettings,
    // Stores are built once per bucket and shared: each holds a connection pool.
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    redactor: Arc<Redactor>,
}

impl fmt::Debug for OfflineStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OfflineStorage")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OfflineStorage {
    /// Storage configured by an `offline_store` section.
    pub fn new(settings: OfflineStoreSettings) -> Self {
        OfflineStorage {
            settings,
            stores: Mutex::new(HashMap::new()),
            redactor: Arc::new(Redactor::default()),
        }
    }

    /// The section it was configured with.
    pub fn settings(&self) -> &OfflineStoreSettings {
        &self.settings
    }

    /// Whether `spec` is an object-store URL rather than a path.
    pub fn is_url(spec: &str) -> bool {
        S3_SCHEMES.iter().any(|s| spec.starts_with(s)) || spec.contains("://")
    }

    /// The location `spec` names: an `s3://bucket/key` URL, a `file://` URL, or a path
    /// (relative paths resolve against `base_dir`). Builds the bucket's store on first use,
    /// without any request.
    pub fn locate(&self, spec: &str, base_dir: &Path) -> Result<Location, String> {
        if let Some(rest) = S3_SCHEMES.iter().find_map(|s| spec.strip_prefix(s)) {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!(
                    "{spec}: a URL needs a bucket (s3://bucket/prefix/)"
                ));
            }
            let store = self.store(bucket)?;
            return Ok(Location::Object(ObjectLocation {
                bucket_url: format!("s3://{bucket}").into(),
                key: key.trim_start_matches('/').to_string(),
                store,
                redactor: Arc::clone(&self.redactor),
            }));
        }
        if let Some(path) = spec.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = spec.split_once("://") {
            return Err(format!(
                "{spec}: unsupported URL scheme \"{scheme}\" (expected s3://, s3a:// or a path)"
            ));
        }
        Ok(Location::Local(base_dir.join(spec)))
    }

    fn store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, String> {
        let mut stores = self.stores.lock();
        if let Some(store) = stores.get(bucket) {
            return Ok(Arc::clone(store));
        }
        let store = self.build_s3(bucket)?;
        stores.insert(bucket.to_string(), Arc::clone(&store));
        Ok(store)
    }

    fn build_s3(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, String> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let s3 = &self.settings.s3;
        let profile_name = s3
            .profile
            .clone()
            .or_else(|| env("AWS_PROFILE"))
            .unwrap_or_else(|| "default".into());
        let profile = aws_profile::load(&profile_name);

        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // The environment's keys win over the shared files, as for every AWS tool.
        match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => {
                self.redactor.add(&id);
                self.redactor.add(&secret);
                if let Some(token) = env("AWS_SESSION_TOKEN") {
                    self.redactor.add(&token);
                }
            }
            _ => {
                if let (Some(id), Some(secret)) = (
                    profile.get("aws_access_key_id"),
                    profile.get("aws_secret_access_key"),
                ) {
                    self.redactor.add(id);
                    self.redactor.add(secret);
                    builder = builder
                        .with_access_key_id(id.clone())
                        .with_secret_access_key(secret.clone());
                    if let Some(token) = profile.get("aws_session_token") {
                        self.redactor.add(token);
                        builder = builder.with_token(token.clone());
                    }
                }
            }
        }
        let region = s3
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| profile.get("region").cloned())
            .unwrap_or_else(|| "us-east-1".into());
        builder = builder.with_region(region);
        let endpoint = s3
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| env("AWS_ENDPOINT"))
            .or_else(|| profile.get("endpoint_url").cloned());
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        builder = builder
            .with_virtual_hosted_style_request(!s3.path_style.unwrap_or(true))
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(15),
                    base: 2.0,
                },
                max_retries: self.settings.max_retries,
                retry_timeout: self.settings.retry_timeout.0,
            })
            // Through `with_config`, so the client options read from the environment (proxy,
            // AWS_ALLOW_HTTP, ...) are kept.
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                format!("{}ms", self.settings.request_timeout.0.as_millis()),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                format!("{}ms", self.settings.connect_timeout.0.as_millis()),
            );
        let store = builder
            .build()
            .map_err(|e| self.redactor.redact(format!("s3://{bucket}: {e}")))?;
        Ok(Arc::new(LimitStore::new(
            store,
            self.settings.max_concurrent_requests.max(1),
        )))
    }
}

/// The shared AWS config and credentials files (`~/.aws/config`, `~/.aws/credentials`, or
/// `AWS_CONFIG_FILE` and `AWS_SHARED_CREDENTIALS_FILE`).
mod aws_profile {
    use std::collections::HashMap;
    use std::path::PathBuf;

    /// The settings of `profile`: its section of the credentials file over its section of the
    /// config file (`[profile name]`, or `[default]`). Missing files give no settings.
    pub(super) fn load(profile: &str) -> HashMap<String, String> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let path = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
        };
        let mut settings = HashMap::new();
        let config_section = if profile == "default" {
            "default".to_string()
        } else {
            format!("profile {profile}")
        };
        if let Some(text) =
            path("AWS_CONFIG_FILE", "config").and_then(|p| std::fs::read_to_string(p).ok())
        {
            settings.extend(section(&text, &config_section));
        }
        if let Some(text) = path("AWS_SHARED_CREDENTIALS_FILE", "credentials")
            .and_then(|p| std::fs::read_to_string(p).ok())
        {
            settings.extend(section(&text, profile));
        }
        settings
    }

    /// The `key = value` lines of section `[name]` of an INI text (keys lowercased).
    pub(super) fn section(text: &str, name: &str) -> HashMap<String, String> {
        let mut out = HashMap::new();
        let mut inside = false;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                inside = header.trim() == name;
                continue;
            }
            if inside && let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        out
    }
}

/// The time range (inclusive, microseconds, UTC) the hive partition directories in `path`
/// cover: `date=YYYY-MM-DD` gives that day; `year=`, `month=`, `day=` give the year, month or
/// day they narrow to. `None` when the path has no such directory.
pub fn hive_partition_range(path: &str) -> Option<(EpochMicros, EpochMicros)> {
    use chrono::NaiveDate;
    let (mut year, mut month, mut day) = (None, None, None);
    let parts: Vec<&str> = path.split('/').collect();
    // The file name itself is not a partition.
    for part in &parts[..parts.len().saturating_sub(1)] {
        let Some((name, value)) = part.split_once('=') else {
            continue;
        };
        match name {
            "date" | "dt" => {
                let d = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
                return Some(day_range(d, d.succ_opt()?));
            }
            "year" => year = value.parse::<i32>().ok(),
            "month" => month = value.parse::<u32>().ok(),
            "day" => day = value.parse::<u32>().ok(),
            _ => {}
        }
    }
    let year = year?;
    match (month, day) {
        (Some(m), Some(d)) => {
            let start = NaiveDate::from_ymd_opt(year, m, d)?;
            Some(day_range(start, start.succ_opt()?))
        }
        (Some(m), None) => {
            let start = NaiveDate::from_ymd_opt(year, m, 1)?;
            let end = if m == 12 {
                NaiveDate::from_ymd_opt(year + 1, 1, 1)?
            } else {
                NaiveDate::from_ymd_opt(year, m + 1, 1)?
            };
            Some(day_range(start, end))
        }
        (None, _) => {
            let start = NaiveDate::from_ymd_opt(year, 1, 1)?;
            Some(day_range(start, NaiveDate::from_ymd_opt(year + 1, 1, 1)?))
        }
    }
}

/// `[start, end)` as an inclusive range of microseconds.
fn day_range(start: chrono::NaiveDate, end: chrono::NaiveDate) -> (EpochMicros, EpochMicros) {
    let micros = |d: chrono::NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_micros()
    };
    (micros(start), micros(end) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_partitions_give_the_day_month_or_year_they_name() {
        let day = hive_partition_range("s3://b/t/date=2024-03-05/part-0.parquet").unwrap();
        assert_eq!(day.0, 1_709_596_800_000_000);
        assert_eq!(day.1, 1_709_683_200_000_000 - 1);
        let same = hive_partition_range("/d/year=2024/month=03/day=05/x.parquet").unwrap();
        assert_eq!(same, day);
        let month = hive_partition_range("/d/year=2024/month=12/x.parquet").unwrap();
        assert_eq!(month.0, 1_733_011_200_000_000);
        assert_eq!(month.1, 1_735_689_600_000_000 - 1);
        assert!(hive_partition_range("/d/region=eu/x.parquet").is_none());
        assert!(hive_partition_range("/d/date=2024-03-05.parquet").is_none());
        assert!(hive_partition_range("/d/date=yesterday/x.parquet").is_none());
    }

    #[test]
    fn profiles_are_read_from_their_section() {
        let text = "[default]\naws_access_key_id = A\n\n[profile dev]\nregion = eu-west-1\n# c\n";
        assert_eq!(
            aws_profile::section(text, "default")["aws_access_key_id"],
            "A"
        );
        assert_eq!(
            aws_profile::section(text, "profile dev")["region"],
            "eu-west-1"
        );
        assert!(aws_profile::section(text, "other").is_empty());
    }

    #[test]
    fn secrets_are_redacted_from_messages() {
        let r = Redactor::default();
        r.add("s3cr3t-key");
        assert_eq!(r.redact("bad key s3cr3t-key!"), "bad key ***!");
    }

    #[test]
    fn urls_and_paths_are_located() {
        let storage = OfflineStorage::new(OfflineStoreSettings::default());
        let base = Path::new("/repo");
        let l = storage.locate("data/x.parquet", base).unwrap();
        assert_eq!(l.as_local(), Some(Path::new("/repo/data/x.parquet")));
        let o = storage.locate("s3://bucket/a/b/", base).unwrap();
        assert!(o.is_object());
        assert_eq!(o.join("c.parquet").to_string(), "s3://bucket/a/b/c.parquet");
        assert!(storage.locate("gs://x/y", base).unwrap_err().contains("gs"));
        assert!(
            storage
                .locate("s3:///y", base)
                .unwrap_err()
                .contains("bucket")
        );
    }
}
