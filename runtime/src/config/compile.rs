//! Turns a [`RawConfig`] into a [`Registry`], collecting every error with its path.
//!
//! Compiling is a list of named passes run in document order (entities, feature views, on-demand
//! views, feature services, push sources, settings, monitoring). Each pass reads the raw document and what the
//! passes before it built, and reports into one [`Errors`] collector instead of stopping, so one
//! run reports every problem. The registry is built only when no pass reported anything.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::{ConfigError, RawConfig, RawField, join_path};
use crate::registry::{
    Entity, FeatureRef, FeatureService, FeatureView, Field, JoinKey, MonitorReference, Monitoring,
    Name, OnDemandView, ParquetSource, PushSource, Registry, ServingRule, on_demand_inputs,
    resolve_feature_spec,
};
use crate::settings::{CacheSettings, PushSettings, ServerSettings, TransformSettings};
use crate::storage::OfflineStorage;
use crate::store::OnlineStoreSpec;
use crate::types::{ScalarType, ValueType};

/// Collects errors while compiling.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }

    fn name(&mut self, path: String, s: &str) -> Option<Name> {
        Name::new(s).map_err(|m| self.push(path, m)).ok()
    }

    fn fields(&mut self, path: &str, raw: &[RawField], taken: &HashSet<&str>) -> Vec<Field> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, f) in raw.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let name = self.name(format!("{p}.name"), &f.name);
            if !seen.insert(f.name.as_str()) {
                self.push(
                    format!("{p}.name"),
                    format!("duplicate field \"{}\"", f.name),
                );
            } else if taken.contains(f.name.as_str()) {
                self.push(
                    format!("{p}.name"),
                    format!("field \"{}\" has the name of a join key", f.name),
                );
            }
            let dtype = ValueType::parse(&f.dtype);
            if dtype.is_none() {
                self.push(
                    format!("{p}.dtype"),
                    format!(
                        "unknown type \"{}\"; expected int32, int64, float32, float64, string, bool, \
                         bytes, unix_timestamp or list<...> of one of them",
                        f.dtype
                    ),
                );
            }
            if let (Some(name), Some(dtype)) = (name, dtype) {
                out.push(Field { name, dtype });
            }
        }
        out
    }
}

/// What every pass reads: the document, its directory, and the items that failed to parse.
struct Input<'a> {
    raw: &'a RawConfig,
    /// Directory of `feature_store.yaml`; relative paths resolve against it.
    base_dir: &'a Path,
    /// Names of items that failed to parse (reported already, so references to them are not).
    broken: &'a HashSet<String>,
    /// Locates source paths and URLs.
    offline: &'a Arc<OfflineStorage>,
}

impl Input<'_> {
    /// True when a reference to feature view `name` must not be reported: the view failed to
    /// parse, or is declared and reported where it is wrong.
    fn declares_feature_view(&self, name: &str) -> bool {
        self.broken.contains(name) || self.raw.feature_views.iter().any(|v| v.name == name)
    }

    /// True when `name` is declared as a feature view or an on-demand view.
    fn declares_view(&self, name: &str) -> bool {
        self.raw.feature_views.iter().any(|v| v.name == name)
            || self
                .raw
                .on_demand_feature_views
                .iter()
                .any(|v| v.name == name)
    }
}

/// Checks every name, type and reference of `raw` and builds the registry. Relative paths resolve
/// against `base_dir` (the directory of `feature_store.yaml`).
pub fn compile(raw: RawConfig, base_dir: &Path) -> Result<Registry, Vec<ConfigError>> {
    compile_with(raw, base_dir, &HashSet::new())
}

/// [`compile`], not reporting references to `broken` names (items that failed to parse and were
/// reported already). Runs every pass, in order, then builds the registry if none reported.
pub(crate) fn compile_with(
    raw: RawConfig,
    base_dir: &Path,
    broken: &HashSet<String>,
) -> Result<Registry, Vec<ConfigError>> {
    let offline = Arc::new(OfflineStorage::new(raw.offline_store.clone()));
    let input = Input {
        raw: &raw,
        base_dir,
        broken,
        offline: &offline,
    };
    let mut errs = Errors::default();
    let project = errs.name("project".into(), &raw.project);
    let entities = entities(&input, &mut errs);
    let feature_views = feature_views(&input, &entities, &mut errs);
    let on_demand_views = on_demand_views(&input, &feature_views, &mut errs);
    let feature_index = feature_index(&feature_views, &on_demand_views);
    let feature_services = feature_services(
        &input,
        &feature_views,
        &on_demand_views,
        &feature_index,
        &mut errs,
    );
    let push_sources = push_sources(&input, &feature_views, &mut errs);
    let settings = settings(&input, &mut errs);
    let monitoring = monitoring(
        &input,
        &feature_views,
        &on_demand_views,
        &feature_services,
        &mut errs,
    );

    if !errs.0.is_empty() {
        return Err(errs.0);
    }
    let project = project.expect("an invalid project name is reported");
    let settings = settings.expect("invalid settings are reported");
    Ok(Registry {
        project,
        entities,
        feature_views,
        on_demand_views,
        feature_services,
        push_sources,
        push: settings.push,
        online_store: settings.online_store,
        offline,
        server: settings.server,
        cache: settings.cache,
        transforms: settings.transforms,
        base_dir: base_dir.to_path_buf(),
        feature_index,
        monitoring,
    })
}

/// Entities: names, join keys and their type.
fn entities(input: &Input<'_>, errs: &mut Errors) -> Vec<Entity> {
    let mut entities = Vec::new();
    let mut entity_names = HashSet::new();
    for (i, e) in input.raw.entities.iter().enumerate() {
        let p = format!("entities[{i}]");
        let name = errs.name(format!("{p}.name"), &e.name);
        if !entity_names.insert(e.name.as_str()) {
            errs.push(
                format!("{p}.name"),
                format!("duplicate entity \"{}\"", e.name),
            );
        }
        let dtype = match e.value_type.as_str() {
            "string" => Some(ScalarType::String),
            "int64" => Some(ScalarType::Int64),
            "int32" => Some(ScalarType::Int32),
            "bytes" => Some(ScalarType::Bytes),
            other => {
                errs.push(
                    format!("{p}.value_type"),
                    format!("unsupported join key type \"{other}\"; expected string, int64, int32 or bytes"),
                );
                None
            }
        };
        let keys: Vec<&str> = if e.join_keys.is_empty() {
            vec![e.name.as_str()]
        } else {
            e.join_keys.iter().map(String::as_str).collect()
        };
        let mut join_keys = Vec::new();
        for (k, key) in keys.iter().enumerate() {
            if let Some(n) = errs.name(format!("{p}.join_keys[{k}]"), key) {
                join_keys.push(n);
            }
        }
        if let (Some(name), Some(dtype)) = (name, dtype) {
            entities.push(Entity {
                name,
                join_keys: join_keys
                    .into_iter()
                    .map(|name| JoinKey { name, dtype })
                    .collect(),
            });
        }
    }
    entities
}

/// Feature views: entities resolved, schema typed, source columns checked, serving rule built.
fn feature_views(input: &Input<'_>, entities: &[Entity], errs: &mut Errors) -> Vec<FeatureView> {
    let raw = input.raw;
    let retention_slack = raw
        .online_store
        .as_ref()
        .map_or_else(
            || OnlineStoreSpec::default().key_ttl_slack(),
            OnlineStoreSpec::key_ttl_slack,
        )
        .as_micros_i64();
    let mut view_names = HashSet::new();
    let mut feature_views = Vec::new();
    for (i, v) in raw.feature_views.iter().enumerate() {
        let p = format!("feature_views[{i}]");
        let name = errs.name(format!("{p}.name"), &v.name);
        if !view_names.insert(v.name.as_str()) {
            errs.push(
                format!("{p}.name"),
                format!("duplicate feature view \"{}\"", v.name),
            );
        }
        if v.entities.is_empty() {
            errs.push(
                format!("{p}.entities"),
                "a feature view needs at least one entity",
            );
        }
        let mut view_entities = Vec::new();
        let mut join_keys: Vec<JoinKey> = Vec::new();
        for (k, ename) in v.entities.iter().enumerate() {
            match entities.iter().find(|e| e.name.as_str() == ename) {
                Some(e) => {
                    view_entities.push(e.name.clone());
                    for jk in &e.join_keys {
                        if join_keys.iter().any(|j| j.name == jk.name) {
                            errs.push(
                                format!("{p}.entities[{k}]"),
                                format!(
                                    "join key \"{}\" appears in two entities of this view",
                                    jk.name
                                ),
                            );
                        }
                        join_keys.push(jk.clone());
                    }
                }
                // Reported where the entity itself is wrong.
                None if input.broken.contains(ename)
                    || raw.entities.iter().any(|e| &e.name == ename) => {}
                None => errs.push(
                    format!("{p}.entities[{k}]"),
                    format!("unknown entity \"{ename}\""),
                ),
            }
        }
        if v.schema.is_empty() {
            errs.push(
                format!("{p}.schema"),
                "a feature view needs at least one field",
            );
        }
        let taken: HashSet<&str> = join_keys.iter().map(|j| j.name.as_str()).collect();
        let fields = errs.fields(&format!("{p}.schema"), &v.schema, &taken);
        let location = if v.source.path.trim().is_empty() {
            errs.push(format!("{p}.source.path"), "must not be empty");
            None
        } else {
            input
                .offline
                .locate(&v.source.path, input.base_dir)
                .map_err(|m| errs.push(format!("{p}.source.path"), m))
                .ok()
        };
        if v.source.timestamp_field.trim().is_empty() {
            errs.push(format!("{p}.source.timestamp_field"), "must not be empty");
        }
        for (what, column) in [
            ("timestamp_field", Some(&v.source.timestamp_field)),
            (
                "created_timestamp_column",
                v.source.created_timestamp_column.as_ref(),
            ),
        ] {
            if let Some(c) = column
                && (taken.contains(c.as_str()) || v.schema.iter().any(|f| &f.name == c))
            {
                errs.push(
                    format!("{p}.source.{what}"),
                    format!("column \"{c}\" is also a join key or a feature"),
                );
            }
        }
        let cache_ttl = v.cache_ttl.unwrap_or(raw.cache.ttl).non_zero();
        if let Some(name) = name
            && let Some(location) = location
            && fields.len() == v.schema.len()
            && view_entities.len() == v.entities.len()
        {
            let schema_fingerprint = fingerprint(&fields);
            let ttl = v.ttl.non_zero();
            let rule = ServingRule::new(
                ttl.map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
                schema_fingerprint,
                retention_slack,
            );
            feature_views.push(FeatureView {
                name,
                entities: view_entities,
                join_keys,
                fields,
                ttl,
                online: v.online,
                source: ParquetSource {
                    path_spec: v.source.path.clone(),
                    location,
                    timestamp_field: v.source.timestamp_field.clone(),
                    created_timestamp_column: v.source.created_timestamp_column.clone(),
                },
                cache_ttl: if raw.cache.enabled { cache_ttl } else { None },
                schema_fingerprint,
                rule,
            });
        }
    }
    feature_views
}

/// On-demand views: sources resolved, inputs laid out and checked to have unique names, limits
/// taken from the view or the `transforms` section.
fn on_demand_views(
    input: &Input<'_>,
    feature_views: &[FeatureView],
    errs: &mut Errors,
) -> Vec<OnDemandView> {
    let raw = input.raw;
    // Feature views and on-demand views share one namespace.
    let mut view_names: HashMap<&str, &'static str> = raw
        .feature_views
        .iter()
        .map(|v| (v.name.as_str(), "feature view"))
        .collect();
    let mut on_demand_views = Vec::new();
    for (i, v) in raw.on_demand_feature_views.iter().enumerate() {
        let p = format!("on_demand_feature_views[{i}]");
        let name = errs.name(format!("{p}.name"), &v.name);
        if let Some(kind) = view_names.insert(v.name.as_str(), "on-demand view") {
            errs.push(
                format!("{p}.name"),
                format!("duplicate view name \"{}\" (already a {kind})", v.name),
            );
        }
        let transform = errs.name(format!("{p}.transform"), &v.transform);
        let mut sources = Vec::new();
        for (k, s) in v.sources.iter().enumerate() {
            match feature_views.iter().position(|fv| fv.name.as_str() == s) {
                Some(idx) => sources.push(idx),
                None if input.declares_feature_view(s) => {}
                None => errs.push(
                    format!("{p}.sources[{k}]"),
                    format!("unknown feature view \"{s}\""),
                ),
            }
        }
        if v.sources.is_empty() && v.request_fields.is_empty() {
            errs.push(
                format!("{p}.sources"),
                "an on-demand view needs at least one source view or request field",
            );
        }
        if v.schema.is_empty() {
            errs.push(
                format!("{p}.schema"),
                "an on-demand view needs at least one output field",
            );
        }
        let request_fields = errs.fields(
            &format!("{p}.request_fields"),
            &v.request_fields,
            &HashSet::new(),
        );
        let fields = errs.fields(&format!("{p}.schema"), &v.schema, &HashSet::new());
        if let Some(0) = v.max_memory_mib {
            errs.push(format!("{p}.max_memory_mib"), "must be at least 1");
        }
        if let Some(0) = v.fuel_per_call {
            errs.push(format!("{p}.fuel_per_call"), "must be greater than 0");
        }
        // Transform inputs are named by feature (and request field) name: they must be unique.
        let mut input_names: HashMap<&str, String> = HashMap::new();
        for &s in &sources {
            for f in &feature_views[s].fields {
                let origin = format!("feature view \"{}\"", feature_views[s].name);
                if let Some(first) = input_names.insert(f.name.as_str(), origin.clone()) {
                    errs.push(
                        format!("{p}.sources"),
                        format!("input \"{}\" comes from both {first} and {origin}; transform inputs are named by feature", f.name),
                    );
                }
            }
        }
        for (k, f) in request_fields.iter().enumerate() {
            if let Some(first) = input_names.insert(f.name.as_str(), "a request field".into()) {
                errs.push(
                    format!("{p}.request_fields[{k}].name"),
                    format!("input \"{}\" is also provided by {first}", f.name),
                );
            }
        }
        if let (Some(name), Some(transform)) = (name, transform) {
            let inputs = on_demand_inputs(feature_views, &sources, &request_fields);
            let input_names = inputs.iter().map(|i| i.name.to_string()).collect();
            on_demand_views.push(OnDemandView {
                name,
                transform,
                sources,
                request_fields,
                inputs,
                input_names,
                fields,
                fuel_per_call: v.fuel_per_call.unwrap_or(raw.transforms.fuel_per_call),
                fuel_per_row: v.fuel_per_row.unwrap_or(raw.transforms.fuel_per_row),
                timeout: v.timeout.unwrap_or(raw.transforms.timeout).0,
                max_memory_bytes: v.max_memory_mib.unwrap_or(raw.transforms.max_memory_mib)
                    as usize
                    * 1024
                    * 1024,
            });
        }
    }
    on_demand_views
}

/// The feature index: `view:feature` for every feature of every compiled view.
fn feature_index(
    feature_views: &[FeatureView],
    on_demand_views: &[OnDemandView],
) -> HashMap<String, FeatureRef> {
    let mut index = HashMap::new();
    for (vi, v) in feature_views.iter().enumerate() {
        for (fi, f) in v.fields.iter().enumerate() {
            index.insert(
                format!("{}:{}", v.name, f.name),
                FeatureRef::View {
                    view: vi,
                    field: fi,
                },
            );
        }
    }
    for (vi, v) in on_demand_views.iter().enumerate() {
        for (fi, f) in v.fields.iter().enumerate() {
            index.insert(
                format!("{}:{}", v.name, f.name),
                FeatureRef::OnDemand {
                    view: vi,
                    field: fi,
                },
            );
        }
    }
    index
}

/// Feature services: every feature reference resolved, duplicates dropped.
fn feature_services(
    input: &Input<'_>,
    feature_views: &[FeatureView],
    on_demand_views: &[OnDemandView],
    feature_index: &HashMap<String, FeatureRef>,
    errs: &mut Errors,
) -> Vec<FeatureService> {
    let mut feature_services = Vec::new();
    let mut service_names = HashSet::new();
    for (i, s) in input.raw.feature_services.iter().enumerate() {
        let p = format!("feature_services[{i}]");
        let name = errs.name(format!("{p}.name"), &s.name);
        if !service_names.insert(s.name.as_str()) {
            errs.push(
                format!("{p}.name"),
                format!("duplicate feature service \"{}\"", s.name),
            );
        }
        if s.features.is_empty() {
            errs.push(
                format!("{p}.features"),
                "a feature service needs at least one feature",
            );
        }
        let mut features = Vec::new();
        for (k, spec) in s.features.iter().enumerate() {
            match resolve_feature_spec(feature_index, feature_views, on_demand_views, spec) {
                Ok(refs) => {
                    for r in refs {
                        if !features.contains(&r) {
                            features.push(r);
                        }
                    }
                }
                Err(m) => {
                    // A reference into a view that itself failed to compile was reported there.
                    let view = spec.split(':').next().unwrap_or(spec);
                    let view_is_broken = input.broken.contains(view)
                        || (input.declares_view(view)
                            && !feature_views.iter().any(|v| v.name.as_str() == view)
                            && !on_demand_views.iter().any(|v| v.name.as_str() == view));
                    if !view_is_broken {
                        errs.push(format!("{p}.features[{k}]"), m);
                    }
                }
            }
        }
        let logging = s.logging.as_ref().and_then(|l| {
            let lp = format!("{p}.logging");
            let before = errs.0.len();
            if !(l.sample_rate > 0.0 && l.sample_rate <= 1.0) {
                errs.push(
                    format!("{lp}.sample_rate"),
                    format!(
                        "must be greater than 0 and at most 1, got {}",
                        l.sample_rate
                    ),
                );
            }
            if l.queue_rows == 0 {
                errs.push(format!("{lp}.queue_rows"), "must be at least 1");
            }
            if l.roll_rows == 0 {
                errs.push(format!("{lp}.roll_rows"), "must be at least 1");
            }
            if l.roll_interval.0.is_zero() {
                errs.push(format!("{lp}.roll_interval"), "must be longer than 0s");
            }
            if l.destination.as_os_str().is_empty() {
                errs.push(format!("{lp}.destination"), "must name a directory");
            }
            (errs.0.len() == before).then(|| crate::settings::FeatureLogSettings {
                destination: input.base_dir.join(&l.destination),
                ..l.clone()
            })
        });
        if let Some(name) = name {
            feature_services.push(FeatureService {
                name,
                features,
                logging,
            });
        }
    }
    feature_services
}

/// Push sources: each feeds a compiled feature view.
fn push_sources(
    input: &Input<'_>,
    feature_views: &[FeatureView],
    errs: &mut Errors,
) -> Vec<PushSource> {
    let mut push_sources = Vec::new();
    let mut push_names = HashSet::new();
    for (i, p) in input.raw.push_sources.iter().enumerate() {
        let path = format!("push_sources[{i}]");
        let name = errs.name(format!("{path}.name"), &p.name);
        if !push_names.insert(p.name.as_str()) {
            errs.push(
                format!("{path}.name"),
                format!("duplicate push source \"{}\"", p.name),
            );
        }
        match feature_views
            .iter()
            .position(|v| v.name.as_str() == p.feature_view)
        {
            Some(view) => {
                if let Some(name) = name {
                    push_sources.push(PushSource { name, view });
                }
            }
            None if input.declares_feature_view(&p.feature_view) => {}
            None => errs.push(
                format!("{path}.feature_view"),
                format!("unknown feature view \"{}\"", p.feature_view),
            ),
        }
    }
    push_sources
}

/// The settings sections, checked, with relative paths resolved.
struct Settings {
    push: PushSettings,
    online_store: OnlineStoreSpec,
    server: ServerSettings,
    cache: CacheSettings,
    transforms: TransformSettings,
}

/// Settings: `push`, `online_store` (checked by its backend), `server`, `cache`, `transforms`.
/// `None` when the online store's section is invalid (reported).
fn settings(input: &Input<'_>, errs: &mut Errors) -> Option<Settings> {
    let raw = input.raw;
    if raw.push.flush_rows == 0 {
        errs.push("push.flush_rows", "must be at least 1");
    }
    if raw.offline_store.max_concurrent_requests == 0 {
        errs.push(
            "offline_store.max_concurrent_requests",
            "must be at least 1",
        );
    }
    let online_store = match raw
        .online_store
        .clone()
        .unwrap_or_default()
        .checked(input.base_dir)
    {
        Ok(spec) => Some(spec),
        Err(problems) => {
            for e in problems {
                errs.push(join_path("online_store", &e.path), e.message);
            }
            None
        }
    };
    if raw
        .server
        .bind
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_none()
    {
        errs.push(
            "server.bind",
            format!("expected host:port, got \"{}\"", raw.server.bind),
        );
    }
    if raw.server.max_entities == 0 {
        errs.push("server.max_entities", "must be at least 1");
    }
    if raw.server.max_body_bytes < 64 {
        errs.push("server.max_body_bytes", "must be at least 64 bytes");
    }
    if raw.transforms.max_memory_mib == 0 {
        errs.push("transforms.max_memory_mib", "must be at least 1");
    }
    if raw.transforms.timeout.0.is_zero() {
        errs.push("transforms.timeout", "must be greater than 0");
    }
    if raw.transforms.fuel_per_call == 0 {
        errs.push("transforms.fuel_per_call", "must be greater than 0");
    }
    if raw.transforms.max_module_bytes == 0 {
        errs.push("transforms.max_module_bytes", "must be greater than 0");
    }
    if raw.transforms.load_timeout.0.is_zero() {
        errs.push("transforms.load_timeout", "must be greater than 0");
    }
    let mut transforms = raw.transforms.clone();
    transforms.dir = input.base_dir.join(&transforms.dir);
    Some(Settings {
        push: raw.push.clone(),
        online_store: online_store?,
        server: raw.server.clone(),
        cache: raw.cache.clone(),
        transforms,
    })
}

/// The shortest sub-window: the window divided by `sub_windows` must be at least this long.
const MIN_SUB_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Monitoring: the sampling and window settings, and each reference resolved to the features it
/// covers, its profile path resolved and checked to exist (the profile is read, and matched with
/// the features, when a server derives its state from the registry).
fn monitoring(
    input: &Input<'_>,
    feature_views: &[FeatureView],
    on_demand_views: &[OnDemandView],
    feature_services: &[FeatureService],
    errs: &mut Errors,
) -> Option<Monitoring> {
    let raw = input.raw.monitoring.as_ref()?;
    if !(raw.sample_rate > 0.0 && raw.sample_rate <= 1.0) {
        errs.push(
            "monitoring.sample_rate",
            format!(
                "must be greater than 0 and at most 1, got {}",
                raw.sample_rate
            ),
        );
    }
    if raw.sub_windows == 0 || raw.sub_windows > 1000 {
        errs.push("monitoring.sub_windows", "must be from 1 to 1000");
    } else if raw.window.0 < MIN_SUB_WINDOW * raw.sub_windows as u32 {
        errs.push(
            "monitoring.window",
            format!(
                "must be at least 1s per sub-window ({}s with sub_windows: {})",
                raw.sub_windows, raw.sub_windows
            ),
        );
    }
    if raw.min_samples == 0 {
        errs.push("monitoring.min_samples", "must be at least 1");
    }
    let mut references = Vec::new();
    for (i, r) in raw.references.iter().enumerate() {
        let p = format!("monitoring.references[{i}]");
        let target = match (&r.feature_view, &r.feature_service) {
            (Some(_), Some(_)) => {
                errs.push(&p, "set feature_view or feature_service, not both");
                None
            }
            (None, None) => {
                errs.push(&p, "set feature_view or feature_service");
                None
            }
            (Some(view), None) => {
                if let Some(v) = feature_views.iter().position(|v| v.name.as_str() == view) {
                    Some((
                        format!("feature view \"{view}\""),
                        (0..feature_views[v].fields.len())
                            .map(|field| FeatureRef::View { view: v, field })
                            .collect::<Vec<_>>(),
                    ))
                } else if let Some(v) = on_demand_views.iter().position(|v| v.name.as_str() == view)
                {
                    Some((
                        format!("on-demand view \"{view}\""),
                        (0..on_demand_views[v].fields.len())
                            .map(|field| FeatureRef::OnDemand { view: v, field })
                            .collect(),
                    ))
                } else {
                    if !input.broken.contains(view.as_str()) && !input.declares_view(view) {
                        errs.push(
                            format!("{p}.feature_view"),
                            format!("unknown feature view \"{view}\""),
                        );
                    }
                    None
                }
            }
            (None, Some(service)) => {
                match feature_services.iter().find(|s| s.name.as_str() == service) {
                    Some(s) => Some((format!("feature service \"{service}\""), s.features.clone())),
                    None => {
                        let declared = input.broken.contains(service.as_str())
                            || input
                                .raw
                                .feature_services
                                .iter()
                                .any(|s| &s.name == service);
                        if !declared {
                            errs.push(
                                format!("{p}.feature_service"),
                                format!("unknown feature service \"{service}\""),
                            );
                        }
                        None
                    }
                }
            }
        };
        let shown = r.profile.to_string_lossy().into_owned();
        let path = input.base_dir.join(&r.profile);
        let file_ok = if shown.is_empty() {
            errs.push(format!("{p}.profile"), "must not be empty");
            false
        } else {
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => true,
                Ok(_) => {
                    errs.push(
                        format!("{p}.profile"),
                        format!(
                            "{shown} is not a file (expected a training set or a profile .json)"
                        ),
                    );
                    false
                }
                Err(e) => {
                    errs.push(format!("{p}.profile"), format!("cannot read {shown}: {e}"));
                    false
                }
            }
        };
        if let (Some((target, features)), true) = (target, file_ok) {
            references.push(MonitorReference {
                target,
                features,
                profile: shown,
                path,
            });
        }
    }
    Some(Monitoring {
        sample_rate: raw.sample_rate,
        window: raw.window.0,
        sub_windows: raw.sub_windows,
        min_samples: raw.min_samples,
        references,
    })
}

/// FNV-1a over field names and types: stable across builds and platforms.
fn fingerprint(fields: &[Field]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for f in fields {
        for b in f
            .name
            .as_str()
            .bytes()
            .chain([0u8])
            .chain(f.dtype.to_string().bytes())
            .chain([0u8])
        {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}
