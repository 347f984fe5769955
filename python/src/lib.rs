//! `quiver._quiver`: the native half of Quiver's Python package.
//!
//! It wraps the Rust library in-process: [`Store`] opens a `feature_store.yaml` (its registry, its
//! online store, and the serving router that `quiver serve` runs), builds training sets with the
//! same [`historical`] engine as `quiver historical`, materializes, and answers requests through
//! the router without a socket; [`Transform`] runs an on-demand view's `.wasm` module over Arrow
//! data. Arrow tables cross the boundary through the Arrow C stream interface (PyCapsules named
//! `arrow_array_stream`), never as Python objects. The pure-Python package `quiver` wraps this
//! module with Feast's names; see `python/quiver/__init__.py`.
//!
//! No Rust panic may cross into Python: every entry point returns `PyResult`, and errors become
//! `quiver.QuiverError` with Quiver's own message.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchIterator, RecordBatchReader};
use arrow::datatypes::{Field as ArrowField, Schema};
use arrow::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyDict};
use quiver::clock::{SharedClock, system_clock};
use quiver::offline::columns::{arrow_type, build_column, check_column, value_at};
use quiver::offline::historical::{
    EntityInput, FeatureList, HistoricalOptions, historical_in_memory,
};
use quiver::offline::materialize::{MaterializeRequest, materialize};
use quiver::registry::{Field, OnDemandInputSource, OnDemandView, Registry};
use quiver::serving::AppState;
use quiver::serving::push::{PushSummary, PushTarget, PushedFrame, push_frame, write_frame};
use quiver::storage::Location;
use quiver::transform::{Limits, LoadedModule, TransformEngine};
use quiver::types::{Value, ValueType};
use tower::ServiceExt;

pyo3::create_exception!(
    _quiver,
    QuiverError,
    PyException,
    "An error from Quiver: a bad configuration, request, file or transform."
);

/// The PyCapsule name of the Arrow C stream interface.
const STREAM_CAPSULE: &str = "arrow_array_stream";

/// An error with its causes, as one message.
fn quiver_error(e: &dyn std::error::Error) -> PyErr {
    let mut message = e.to_string();
    let mut source = e.source();
    // Bounded: error chains are short, but never loop on a cycle.
    for _ in 0..16 {
        let Some(cause) = source else { break };
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    QuiverError::new_err(message)
}

fn message_error(message: impl Into<String>) -> PyErr {
    QuiverError::new_err(message.into())
}

/// Reads any object with `__arrow_c_stream__` (a pyarrow Table or RecordBatchReader, a Polars
/// frame, ...) as an Arrow stream, without copying its buffers.
fn import_stream(data: &Bound<'_, PyAny>, what: &str) -> PyResult<ArrowArrayStreamReader> {
    if !data.hasattr("__arrow_c_stream__")? {
        return Err(message_error(format!(
            "{what} must be Arrow data with __arrow_c_stream__ (a pyarrow Table or \
             RecordBatchReader); got {}",
            data.get_type().name()?
        )));
    }
    let capsule = data.call_method0("__arrow_c_stream__")?;
    let capsule = capsule.cast_into::<PyCapsule>().map_err(|_| {
        message_error(format!(
            "{what}: __arrow_c_stream__ did not return a PyCapsule"
        ))
    })?;
    let name = capsule.name()?.map(|n| n.to_owned());
    if name.as_deref().and_then(|n| n.to_str().ok()) != Some(STREAM_CAPSULE) {
        return Err(message_error(format!(
            "{what}: __arrow_c_stream__ returned a capsule not named \"{STREAM_CAPSULE}\""
        )));
    }
    let pointer = capsule.pointer() as *mut FFI_ArrowArrayStream;
    // SAFETY: a capsule named "arrow_array_stream" holds an `ArrowArrayStream` (the C stream
    // interface's contract); `from_raw` moves it out and leaves a released stream behind, which
    // the capsule's destructor then ignores.
    unsafe { ArrowArrayStreamReader::from_raw(pointer) }.map_err(|e| quiver_error(&e))
}

/// Hands a reader to Python as an `arrow_array_stream` PyCapsule (pyarrow imports it with
/// `RecordBatchReader._import_from_c_capsule`).
fn export_stream<'py>(
    py: Python<'py>,
    reader: Box<dyn RecordBatchReader + Send>,
) -> PyResult<Bound<'py, PyCapsule>> {
    let stream = FFI_ArrowArrayStream::new(reader);
    let name = CString::new(STREAM_CAPSULE).expect("no NUL in the capsule name");
    PyCapsule::new(py, stream, Some(name))
}

/// Reads a whole Arrow stream into memory: its schema and batches.
fn read_stream(
    reader: ArrowArrayStreamReader,
    what: &str,
) -> Result<(Arc<Schema>, Vec<RecordBatch>), String> {
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("reading {what}: {e}"))?;
    Ok((schema, batches))
}

/// A whole Arrow stream as one batch: a write is checked whole before anything is written.
fn one_batch(reader: ArrowArrayStreamReader) -> Result<RecordBatch, String> {
    let (schema, batches) = read_stream(reader, "df")?;
    arrow::compute::concat_batches(&schema, &batches).map_err(|e| format!("df: {e}"))
}

/// A write's summary as a dict, with `POST /push`'s keys.
fn summary_dict<'py>(py: Python<'py>, s: &PushSummary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("rows", s.rows)?;
    d.set_item("written", s.written)?;
    d.set_item("skipped_older", s.skipped_older)?;
    d.set_item("skipped_expired", s.skipped_expired)?;
    d.set_item("offline_rows", s.offline_rows)?;
    d.set_item("offline_durable", s.offline_durable)?;
    d.set_item("offline_buffered", s.offline_buffered)?;
    Ok(d)
}

/// A `feature_store.yaml` opened in-process: its registry, its online store, and the router that
/// `quiver serve` serves (called without a socket).
#[pyclass(module = "quiver._quiver", frozen)]
struct Store {
    config: PathBuf,
    registry: Arc<Registry>,
    state: Arc<AppState>,
    router: axum::Router,
    clock: SharedClock,
    /// The runtime that the store's connections and the router's tasks live on.
    runtime: tokio::runtime::Runtime,
}

#[pymethods]
impl Store {
    /// Loads `config` and opens its online store.
    #[new]
    fn new(py: Python<'_>, config: PathBuf) -> PyResult<Self> {
        py.detach(|| Self::open(config))
    }

    /// The configuration file this store was opened from.
    #[getter]
    fn config(&self) -> PathBuf {
        self.config.clone()
    }

    /// The project name.
    #[getter]
    fn project(&self) -> String {
        self.registry.project.to_string()
    }

    /// Sends `body` (JSON) to `path` of the serving router with `method`, in-process; returns the
    /// status code and the body of the answer.
    fn request<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> PyResult<(u16, Bound<'py, PyBytes>)> {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .map_err(|e| message_error(format!("{method} {path}: {e}")))?;
        let router = self.router.clone();
        let answer: Result<(u16, Vec<u8>), String> = py.detach(|| {
            self.runtime.block_on(async move {
                let response = router.oneshot(request).await.map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((status, body.to_vec()))
            })
        });
        let (status, body) = answer.map_err(message_error)?;
        Ok((status, PyBytes::new(py, &body)))
    }

    /// Builds a training set with `quiver historical`'s engine: the entity rows (Arrow data) with
    /// their features as of each row's `event_timestamp`. Returns an `arrow_array_stream`
    /// capsule; the schema's metadata holds the training set's metadata and profile.
    #[pyo3(signature = (entities, features=None, feature_service=None, full_feature_names=false, memory_mib=1024, threads=0))]
    // The Python keyword arguments, one parameter each.
    #[allow(clippy::too_many_arguments)]
    fn historical<'py>(
        &self,
        py: Python<'py>,
        entities: &Bound<'py, PyAny>,
        features: Option<Vec<String>>,
        feature_service: Option<String>,
        full_feature_names: bool,
        memory_mib: usize,
        threads: usize,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let features = match (features, feature_service) {
            (Some(_), Some(_)) => {
                return Err(message_error(
                    "give either features or feature_service, not both",
                ));
            }
            (Some(list), None) => FeatureList::Features(list),
            (None, Some(service)) => FeatureList::Service(service),
            (None, None) => return Err(message_error("give features or feature_service")),
        };
        let reader = import_stream(entities, "entity_df")?;
        let registry = Arc::clone(&self.registry);
        // The entity rows go to the engine as the batches Python handed over, and the training
        // set comes back as batches: no file is written in between.
        let batches: Result<Box<dyn RecordBatchReader + Send>, String> = py.detach(move || {
            let (schema, batches) = read_stream(reader, "the entity dataframe")?;
            let entities = EntityInput::Batches { schema, batches };
            let options = HistoricalOptions {
                memory_budget: memory_mib.saturating_mul(1 << 20),
                threads,
                ..HistoricalOptions::default()
            };
            let (set, _) = historical_in_memory(
                &registry,
                &entities,
                &features,
                full_feature_names,
                &options,
            )
            .map_err(|e| error_text(&e))?;
            Ok(Box::new(RecordBatchIterator::new(
                set.batches.into_iter().map(Ok),
                set.schema,
            )) as Box<dyn RecordBatchReader + Send>)
        });
        export_stream(py, batches.map_err(message_error)?)
    }

    /// Pushes `data` (Arrow data) through push source `source` to `to` (`online`, `offline` or
    /// `online_and_offline`): the checks, write-ahead log and newer-wins writer of `POST /push`,
    /// given the Arrow columns as they are (no JSON in between). Returns the write's summary.
    fn push<'py>(
        &self,
        py: Python<'py>,
        source: &str,
        data: &Bound<'py, PyAny>,
        to: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let to = match to {
            "online" => PushTarget::Online,
            "offline" => PushTarget::Offline,
            "online_and_offline" => PushTarget::OnlineAndOffline,
            other => {
                return Err(message_error(format!(
                    "push to \"{other}\": expected online, offline or online_and_offline"
                )));
            }
        };
        let reader = import_stream(data, "df")?;
        let summary = py.detach(|| {
            let batch = one_batch(reader)?;
            self.runtime
                .block_on(push_frame(
                    &self.state,
                    source,
                    PushedFrame::Arrow(&batch),
                    to,
                ))
                .map_err(|e| format!("push to \"{source}\": {}", e.message))
        });
        summary_dict(py, &summary.map_err(message_error)?)
    }

    /// Writes `data` (Arrow data) to feature view `view`'s online records: the checks and
    /// newer-wins writer of `POST /write-to-online-store`, given the Arrow columns as they are.
    fn write_online<'py>(
        &self,
        py: Python<'py>,
        view: &str,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let reader = import_stream(data, "df")?;
        let summary = py.detach(|| {
            let batch = one_batch(reader)?;
            self.runtime
                .block_on(write_frame(&self.state, view, PushedFrame::Arrow(&batch)))
                .map_err(|e| format!("write to \"{view}\": {}", e.message))
        });
        summary_dict(py, &summary.map_err(message_error)?)
    }

    /// Loads the latest value per entity in `[start, end]` (microseconds since the epoch; `start`
    /// `None`: from each view's watermark) from the sources into the online store. Returns one
    /// dict per view: what was read and written.
    #[pyo3(signature = (start, end, views=Vec::new()))]
    fn materialize<'py>(
        &self,
        py: Python<'py>,
        start: Option<i64>,
        end: i64,
        views: Vec<String>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let request = MaterializeRequest {
            start,
            end,
            views,
            progress: false,
        };
        let store = self.state.store();
        let summaries = py
            .detach(|| {
                self.runtime
                    .block_on(materialize(&self.registry, &store, &self.clock, &request))
            })
            .map_err(|e| quiver_error(&e))?;
        summaries
            .iter()
            .map(|s| {
                let d = PyDict::new(py);
                d.set_item("view", &s.view)?;
                d.set_item("start", s.start)?;
                d.set_item("end", s.end)?;
                d.set_item("rows_read", s.rows_read)?;
                d.set_item("entities", s.entities)?;
                d.set_item("written", s.written)?;
                d.set_item("skipped_older", s.skipped_older)?;
                d.set_item("skipped_expired", s.skipped_expired)?;
                d.set_item("skipped_null", s.skipped_null)?;
                Ok(d)
            })
            .collect()
    }

    /// The resolved registry as JSON, for engines that run Quiver's rule themselves (Spark):
    /// every feature view (join keys, fields, ttl, source files sorted by path, timestamp
    /// columns) and on-demand view (transform, sources, inputs, outputs), and the references
    /// that `features` or `feature_service` resolve to.
    #[pyo3(signature = (features=None, feature_service=None))]
    fn describe(
        &self,
        py: Python<'_>,
        features: Option<Vec<String>>,
        feature_service: Option<String>,
    ) -> PyResult<String> {
        py.detach(|| describe(&self.registry, features, feature_service))
            .map_err(message_error)
    }

    /// The transform of on-demand view `view`, loaded from `<transforms.dir>/<transform>.wasm`.
    fn transform(&self, py: Python<'_>, view: &str) -> PyResult<Transform> {
        let (_, od) = self.registry.on_demand_view(view).ok_or_else(|| {
            message_error(format!(
                "no on-demand view \"{view}\" in {}",
                self.config.display()
            ))
        })?;
        let path = self
            .registry
            .transforms
            .dir
            .join(format!("{}.wasm", od.transform));
        let bytes = std::fs::read(&path).map_err(|e| {
            message_error(format!(
                "cannot read the transform module of on-demand view \"{view}\" ({}): {e}",
                path.display()
            ))
        })?;
        let spec = TransformSpec::of_view(od);
        py.detach(|| Transform::load(bytes, spec))
    }
}

impl Store {
    fn open(config: PathBuf) -> PyResult<Self> {
        let registry = quiver::config::load(&config).map_err(|errors| {
            message_error(
                format!("{}: {}", config.display(), errors)
                    .trim_end()
                    .to_string(),
            )
        })?;
        let registry = Arc::new(registry);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("quiver-python")
            .enable_all()
            .build()
            .map_err(|e| message_error(format!("cannot start the runtime: {e}")))?;
        let clock = system_clock();
        let (state, router) = runtime
            .block_on(async {
                let store = registry.open_store(Arc::clone(&clock)).await?;
                // In-process calls come from the owner of the process: no write token.
                let state = AppState::with_write_token(
                    Arc::clone(&registry),
                    store,
                    Arc::clone(&clock),
                    None,
                );
                let router = quiver::serving::router(Arc::clone(&state));
                Ok::<_, quiver::store::StoreError>((state, router))
            })
            .map_err(|e| {
                message_error(format!(
                    "cannot open the online store of {}: {}",
                    config.display(),
                    error_text(&e)
                ))
            })?;
        Ok(Store {
            config,
            registry,
            state,
            router,
            clock,
            runtime,
        })
    }
}

/// An error and its causes as one line.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    for _ in 0..16 {
        let Some(cause) = source else { break };
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn dtype_name(dtype: ValueType) -> String {
    match dtype {
        ValueType::Scalar(s) => s.name().to_string(),
        ValueType::List(s) => format!("list<{}>", s.name()),
    }
}

fn fields_json(fields: &[Field]) -> serde_json::Value {
    fields
        .iter()
        .map(|f| serde_json::json!({"name": f.name.as_str(), "dtype": dtype_name(f.dtype)}))
        .collect()
}

fn describe(
    registry: &Registry,
    features: Option<Vec<String>>,
    feature_service: Option<String>,
) -> Result<String, String> {
    use serde_json::json;
    let specs: Vec<String> = match (features, feature_service) {
        (Some(_), Some(_)) => {
            return Err("give either features or feature_service, not both".into());
        }
        (Some(list), None) => list,
        (None, Some(name)) => registry
            .service(&name)
            .ok_or_else(|| format!("no feature service \"{name}\""))?
            .features
            .iter()
            .map(|r| {
                let (view, field) = registry.ref_names(*r);
                format!("{view}:{}", field.name)
            })
            .collect(),
        (None, None) => Vec::new(),
    };
    let mut refs = Vec::new();
    for spec in &specs {
        for r in registry.resolve_refs(spec)? {
            let (view, field) = registry.ref_names(r);
            refs.push(json!({
                "on_demand": matches!(r, quiver::registry::FeatureRef::OnDemand { .. }),
                "view": view.as_str(),
                "feature": field.name.as_str(),
                "dtype": dtype_name(field.dtype),
            }));
        }
    }
    let mut views = Vec::new();
    for view in &registry.feature_views {
        let files = match &view.source.location {
            Location::Local(_) => quiver::offline::source::source_files(&view.source)
                .map_err(|e| error_text(&e))?
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>(),
            // Spark reads object stores through its own connectors; the source is passed as is.
            Location::Object(_) => vec![view.source.location.to_string()],
        };
        views.push(json!({
            "name": view.name.as_str(),
            "join_keys": view.join_keys.iter().map(|k| json!({"name": k.name.as_str(), "dtype": k.dtype.name()})).collect::<Vec<_>>(),
            "fields": fields_json(&view.fields),
            "ttl_micros": view.ttl.map(|t| i64::try_from(t.as_micros()).unwrap_or(i64::MAX)).filter(|t| *t > 0),
            "files": files,
            "timestamp_field": view.source.timestamp_field,
            "created_timestamp_column": view.source.created_timestamp_column,
        }));
    }
    let on_demand: Vec<_> = registry
        .on_demand_views
        .iter()
        .map(|od| {
            json!({
                "name": od.name.as_str(),
                "transform": od.transform.as_str(),
                "sources": od.sources.iter().map(|i| registry.feature_views[*i].name.as_str()).collect::<Vec<_>>(),
                "request_fields": fields_json(&od.request_fields),
                "fields": fields_json(&od.fields),
                "inputs": od.inputs.iter().map(|i| match i.source {
                    OnDemandInputSource::Feature { view, field } => {
                        let v = &registry.feature_views[view];
                        json!({"name": i.name.as_str(), "dtype": dtype_name(i.dtype), "view": v.name.as_str(), "feature": v.fields[field].name.as_str()})
                    }
                    OnDemandInputSource::Request { field } => {
                        json!({"name": i.name.as_str(), "dtype": dtype_name(i.dtype), "request": od.request_fields[field].name.as_str()})
                    }
                }).collect::<Vec<_>>(),
                "spec": TransformSpec::of_view(od).to_json(),
            })
        })
        .collect();
    let out = json!({
        "project": registry.project.as_str(),
        "transforms_dir": registry.transforms.dir.display().to_string(),
        "references": refs,
        "feature_views": views,
        "on_demand_feature_views": on_demand,
    });
    Ok(out.to_string())
}

/// What a transform module is called with: its inputs (names and types, in order), its output
/// fields and its limits; an on-demand view's, carried as JSON to where the module runs.
#[derive(Debug, Clone)]
struct TransformSpec {
    view: String,
    module: String,
    inputs: Vec<(String, ValueType)>,
    outputs: Vec<Field>,
    limits: Limits,
}

impl TransformSpec {
    fn of_view(od: &OnDemandView) -> Self {
        TransformSpec {
            view: od.name.to_string(),
            module: od.transform.to_string(),
            inputs: od
                .inputs
                .iter()
                .map(|i| (i.name.to_string(), i.dtype))
                .collect(),
            outputs: od.fields.clone(),
            limits: Limits::of_view(od),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "view": self.view,
            "module": self.module,
            "inputs": self.inputs.iter().map(|(n, t)| serde_json::json!({"name": n, "dtype": dtype_name(*t)})).collect::<Vec<_>>(),
            "outputs": fields_json(&self.outputs),
            "fuel_per_call": self.limits.fuel_per_call,
            "fuel_per_row": self.limits.fuel_per_row,
            "timeout_micros": u64::try_from(self.limits.timeout.as_micros()).unwrap_or(u64::MAX),
            "max_memory_bytes": self.limits.max_memory_bytes,
        })
    }

    fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("transform spec: {e}"))?;
        let str_at = |v: &serde_json::Value, key: &str| -> Result<String, String> {
            v.get(key)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("transform spec: \"{key}\" missing or not a string"))
        };
        let u64_at = |key: &str| -> Result<u64, String> {
            v.get(key)
                .and_then(|x| x.as_u64())
                .ok_or_else(|| format!("transform spec: \"{key}\" missing or not an integer"))
        };
        let typed = |key: &str| -> Result<Vec<(String, ValueType)>, String> {
            v.get(key)
                .and_then(|x| x.as_array())
                .ok_or_else(|| format!("transform spec: \"{key}\" missing or not a list"))?
                .iter()
                .map(|f| {
                    let name = str_at(f, "name")?;
                    let dtype = str_at(f, "dtype")?;
                    let dtype = ValueType::parse(&dtype).ok_or_else(|| {
                        format!("transform spec: {key}: \"{name}\" has unknown dtype \"{dtype}\"")
                    })?;
                    Ok((name, dtype))
                })
                .collect()
        };
        let outputs = typed("outputs")?
            .into_iter()
            .map(|(name, dtype)| {
                Ok(Field {
                    name: quiver::registry::Name::new(&name)
                        .map_err(|e| format!("transform spec: output \"{name}\": {e}"))?,
                    dtype,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(TransformSpec {
            view: str_at(&v, "view")?,
            module: str_at(&v, "module")?,
            inputs: typed("inputs")?,
            outputs,
            limits: Limits {
                fuel_per_call: u64_at("fuel_per_call")?,
                fuel_per_row: u64_at("fuel_per_row")?,
                timeout: std::time::Duration::from_micros(u64_at("timeout_micros")?),
                max_memory_bytes: usize::try_from(u64_at("max_memory_bytes")?)
                    .unwrap_or(usize::MAX),
            },
        })
    }
}

/// An on-demand view's `.wasm` module, compiled once, run over Arrow data: the same engine and
/// the same row isolation as serving and `quiver historical` (a row that fails alone gets nulls).
#[pyclass(module = "quiver._quiver", frozen)]
struct Transform {
    spec: TransformSpec,
    module: Arc<LoadedModule>,
    wasm: Vec<u8>,
}

#[pymethods]
impl Transform {
    /// Compiles `wasm` (a module's bytes) for the transform described by `spec` (JSON, as
    /// `Transform.spec` gives it): how executors rebuild a transform from shipped bytes.
    #[staticmethod]
    fn from_parts(py: Python<'_>, wasm: Vec<u8>, spec: &str) -> PyResult<Self> {
        let spec = TransformSpec::from_json(spec).map_err(message_error)?;
        py.detach(|| Transform::load(wasm, spec))
    }

    /// The on-demand view this transform computes.
    #[getter]
    fn view(&self) -> String {
        self.spec.view.clone()
    }

    /// The module's name.
    #[getter]
    fn module(&self) -> String {
        self.spec.module.clone()
    }

    /// SHA-256 of the module's bytes, lowercase hex.
    #[getter]
    fn sha256(&self) -> String {
        self.module.sha256.clone()
    }

    /// The input column names, in call order.
    #[getter]
    fn inputs(&self) -> Vec<String> {
        self.spec.inputs.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The output column names.
    #[getter]
    fn outputs(&self) -> Vec<String> {
        self.spec
            .outputs
            .iter()
            .map(|f| f.name.to_string())
            .collect()
    }

    /// The inputs, outputs and limits as JSON (for `Transform.from_parts`).
    #[getter]
    fn spec(&self) -> String {
        self.spec.to_json().to_string()
    }

    /// The module's bytes.
    #[getter]
    fn wasm<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.wasm)
    }

    /// Runs the transform over `data` (Arrow data holding every input column); returns an
    /// `arrow_array_stream` capsule of `data`'s columns followed by the output columns. Rows on
    /// which the transform fails get nulls, as online; `batch_rows` rows go to one call.
    #[pyo3(signature = (data, batch_rows=4096))]
    fn apply<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        batch_rows: usize,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let reader = import_stream(data, "data")?;
        let schema = reader.schema();
        let columns: Vec<usize> = self
            .spec
            .inputs
            .iter()
            .map(|(name, dtype)| {
                let index = schema.index_of(name).map_err(|_| {
                    message_error(format!(
                        "transform {}: input column \"{name}\" is missing",
                        self.spec.module
                    ))
                })?;
                check_column(schema.field(index).data_type(), *dtype).map_err(|e| {
                    message_error(format!(
                        "transform {}: input column \"{name}\": {e}",
                        self.spec.module
                    ))
                })?;
                Ok(index)
            })
            .collect::<PyResult<_>>()?;
        let mut fields: Vec<Arc<ArrowField>> = schema.fields().iter().cloned().collect();
        for f in &self.spec.outputs {
            fields.push(Arc::new(ArrowField::new(
                f.name.as_str(),
                arrow_type(f.dtype),
                true,
            )));
        }
        let out_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        let batches: Result<Vec<RecordBatch>, String> = py.detach(|| {
            reader
                .map(|batch| {
                    let batch = batch.map_err(|e| e.to_string())?;
                    self.apply_batch(&batch, &columns, &out_schema, batch_rows)
                })
                .collect()
        });
        let batches = batches.map_err(message_error)?;
        let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), out_schema);
        export_stream(py, Box::new(reader))
    }
}

impl Transform {
    fn load(wasm: Vec<u8>, spec: TransformSpec) -> PyResult<Self> {
        let engine = TransformEngine::new().map_err(|e| quiver_error(&e))?;
        let module = engine
            .load(&spec.module, &wasm)
            .map_err(|e| quiver_error(&e))?;
        Ok(Transform { spec, module, wasm })
    }

    fn apply_batch(
        &self,
        batch: &RecordBatch,
        columns: &[usize],
        schema: &Arc<Schema>,
        batch_rows: usize,
    ) -> Result<RecordBatch, String> {
        let names: Vec<&str> = self.spec.inputs.iter().map(|(n, _)| n.as_str()).collect();
        let rows: Vec<Vec<Value>> = (0..batch.num_rows())
            .map(|r| {
                columns
                    .iter()
                    .zip(&self.spec.inputs)
                    .map(|(&c, (_, dtype))| value_at(batch.column(c).as_ref(), *dtype, r))
                    .collect()
            })
            .collect();
        let mut out: Vec<Vec<Value>> = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(batch_rows.max(1)) {
            let results = self
                .module
                .call_isolating(&names, chunk, &self.spec.outputs, &self.spec.limits)
                .map_err(|e| error_text(&e))?;
            for row in results.rows {
                out.push(row.unwrap_or_else(|_| vec![Value::Null; self.spec.outputs.len()]));
            }
        }
        let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
        for (i, f) in self.spec.outputs.iter().enumerate() {
            arrays.push(build_column(f.dtype, out.iter().map(|row| &row[i])));
        }
        RecordBatch::try_new(Arc::clone(schema), arrays).map_err(|e| e.to_string())
    }
}

/// The native module `quiver._quiver`.
#[pymodule]
fn _quiver(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("QuiverError", m.py().get_type::<QuiverError>())?;
    m.add_class::<Store>()?;
    m.add_class::<Transform>()?;
    Ok(())
}
