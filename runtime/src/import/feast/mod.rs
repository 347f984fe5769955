//! `quiver import-feast`: a Feast repository's `feature_store.yaml` and the file registry
//! `feast apply` wrote, turned into an equivalent Quiver `feature_store.yaml`.
//!
//! What cannot be carried over is never dropped silently: each item becomes a [`Note`], listed
//! in the [`ImportSummary`] and as comments at the top of the written file. On-demand views whose
//! transformation is Python get a stub transform crate (`transforms/<view>/` next to the output)
//! and a commented-out entry: enabling the entry before the function is ported would serve nulls
//! as if they were features, and `quiver validate` would fail on the missing module.
//!
//! Steps: [`repo_config::parse`] (Feast's YAML), [`proto::Registry`] (the registry protobuf),
//! [`convert::convert`] (Quiver's model and the notes), [`render::render`] (the YAML text),
//! [`stub::crate_files`] (stub crates), [`import_repository`] (reading and writing files).

pub mod convert;
pub mod proto;
pub mod render;
pub mod repo_config;
pub mod stub;

use std::path::{Path, PathBuf};

use prost::Message;

pub use convert::{Conversion, Note};

/// Why a repository cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The directory has no `feature_store.yaml`.
    #[error("{} is not a Feast repository: {} does not exist", .dir.display(), .dir.join("feature_store.yaml").display())]
    NotARepository {
        /// The directory given.
        dir: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Feast's `feature_store.yaml` is not what Feast accepts.
    #[error("{}: {message}", .path.display())]
    InvalidFeastConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The registry is not a local file.
    #[error("the Feast registry is not a local file ({location}): {advice}")]
    RemoteRegistry {
        /// Where it is.
        location: String,
        /// What to do.
        advice: String,
    },
    /// The registry file does not exist.
    #[error("the Feast registry {} does not exist: run `feast apply` in the repository first", .path.display())]
    RegistryMissing {
        /// The path `feature_store.yaml` names.
        path: PathBuf,
    },
    /// The registry file is not a `feast.core.Registry` protobuf.
    #[error("{} is not a Feast registry: {source}", .path.display())]
    DecodeRegistry {
        /// The file.
        path: PathBuf,
        /// The protobuf error.
        source: prost::DecodeError,
    },
    /// A file to be written exists and `force` is off.
    #[error("{} already exists (--force replaces it)", .path.display())]
    OutputExists {
        /// The file.
        path: PathBuf,
    },
    /// The output would replace Feast's own `feature_store.yaml`.
    #[error("{} is the Feast repository's own feature_store.yaml; write Quiver's elsewhere (--output)", .path.display())]
    OutputIsFeastConfig {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The Quiver `feature_store.yaml` to write.
    pub output: PathBuf,
    /// Replace the output and stub crate files when they exist.
    pub force: bool,
    /// The `quiver-sdk` crate directory the stub crates depend on by path.
    pub sdk_dir: PathBuf,
}

/// What was imported.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    /// The file written.
    pub output: PathBuf,
    /// The Quiver registry written.
    pub conversion: Conversion,
    /// The stub crate directories written.
    pub stub_crates: Vec<PathBuf>,
}

impl ImportSummary {
    /// The report printed after an import: what was written, then every note.
    pub fn report(&self) -> String {
        let c = &self.conversion;
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut out = format!(
            "Wrote {} for project \"{}\": {}, {}, {}, {}\n",
            self.output.display(),
            c.project,
            count(c.entities.len(), "entity", "entities"),
            count(c.feature_views.len(), "feature view", "feature views"),
            count(
                c.feature_services.len(),
                "feature service",
                "feature services"
            ),
            count(c.push_sources.len(), "push source", "push sources"),
        );
        if !c.on_demand_views.is_empty() {
            out.push_str(&format!(
                "Written commented out until they can run: {}\n",
                c.on_demand_views
                    .iter()
                    .map(|v| format!("on-demand view {}", v.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for dir in &self.stub_crates {
            out.push_str(&format!(
                "Generated the stub transform crate {}\n",
                dir.display()
            ));
        }
        if c.notes.is_empty() {
            out.push_str("Everything was carried over.\n");
        } else {
            out.push_str(&format!("Not carried over ({}):\n", c.notes.len()));
            for line in render::notes_list(&c.notes) {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }
}

/// Decodes a `feast.core.Registry` protobuf.
pub fn decode_registry(bytes: &[u8], path: &Path) -> Result<proto::Registry, ImportError> {
    proto::Registry::decode(bytes).map_err(|source| ImportError::DecodeRegistry {
        path: path.to_path_buf(),
        source,
    })
}

fn absolute(path: &Path) -> Result<PathBuf, ImportError> {
    std::path::absolute(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Imports the Feast repository at `repo_dir`: reads its `feature_store.yaml` (expanding
/// environment variables as Feast does) and registry, writes the Quiver file and the stub crates.
pub fn import_repository(
    repo_dir: &Path,
    options: &ImportOptions,
) -> Result<ImportSummary, ImportError> {
    let repo_dir = absolute(repo_dir)?;
    let feast_yaml = repo_dir.join("feature_store.yaml");
    if !feast_yaml.is_file() {
        return Err(ImportError::NotARepository { dir: repo_dir });
    }
    let text = std::fs::read_to_string(&feast_yaml).map_err(|source| ImportError::Read {
        path: feast_yaml.clone(),
        source,
    })?;
    let config = repo_config::parse(&text, &feast_yaml, &repo_dir, &|name| {
        std::env::var(name).ok()
    })?;
    let bytes = match std::fs::read(&config.registry) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImportError::RegistryMissing {
                path: config.registry.clone(),
            });
        }
        Err(source) => {
            return Err(ImportError::Read {
                path: config.registry.clone(),
                source,
            });
        }
    };
    let registry = decode_registry(&bytes, &config.registry)?;

    let output = absolute(&options.output)?;
    let same_file = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if same_file(&output, &feast_yaml) {
        return Err(ImportError::OutputIsFeastConfig { path: output });
    }
    let output_dir = output
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    // Paths are made relative between the real directories (a symlinked temp dir included).
    let real = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let locations = convert::Locations {
        repo_dir: real(&repo_dir),
        output_dir: real(&output_dir),
    };
    let conversion = convert::convert(&config, &registry, &locations);

    let yaml = render::render(&conversion, &repo_dir.display().to_string());
    let mut files = vec![(output.clone(), yaml)];
    let mut stub_crates = Vec::new();
    for view in &conversion.on_demand_views {
        let dir = output_dir.join("transforms").join(&view.transform);
        for (path, contents) in stub::crate_files(view, &options.sdk_dir) {
            files.push((dir.join(path), contents));
        }
        stub_crates.push(dir);
    }
    if !options.force
        && let Some((path, _)) = files.iter().find(|(path, _)| path.exists())
    {
        return Err(ImportError::OutputExists { path: path.clone() });
    }
    for (path, contents) in &files {
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, contents)
        };
        write().map_err(|source| ImportError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(ImportSummary {
        output,
        conversion,
        stub_crates,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::convert::{Locations, convert};
    use super::proto::*;
    use super::repo_config::{FeastConfig, FeastOnlineStore};
    use super::*;

    fn feature(name: &str, value_type: ValueType) -> FeatureSpec {
        FeatureSpec {
            name: name.into(),
            value_type: value_type as i32,
            ..FeatureSpec::default()
        }
    }

    fn entity(name: &str, join_key: &str, value_type: ValueType) -> Entity {
        Entity {
            spec: Some(EntitySpec {
                name: name.into(),
                join_key: join_key.into(),
                value_type: value_type as i32,
                ..EntitySpec::default()
            }),
        }
    }

    fn file_source(name: &str, uri: &str, created: &str) -> DataSource {
        DataSource {
            r#type: SourceType::BatchFile as i32,
            name: name.into(),
            timestamp_field: "event_timestamp".into(),
            created_timestamp_column: created.into(),
            options: Some(SourceOptions::File(FileOptions {
                uri: uri.into(),
                ..FileOptions::default()
            })),
            ..DataSource::default()
        }
    }

    fn view(
        name: &str,
        entity: &str,
        features: Vec<FeatureSpec>,
        ttl_seconds: i64,
        batch: DataSource,
    ) -> FeatureViewSpec {
        FeatureViewSpec {
            name: name.into(),
            project: "rides".into(),
            entities: vec![entity.into()],
            features,
            ttl: Some(Duration {
                seconds: ttl_seconds,
                nanos: 0,
            }),
            batch_source: Some(batch),
            online: true,
            ..FeatureViewSpec::default()
        }
    }

    fn projection(view: &str, features: &[FeatureSpec]) -> FeatureViewProjection {
        FeatureViewProjection {
            feature_view_name: view.into(),
            feature_columns: features.to_vec(),
            ..FeatureViewProjection::default()
        }
    }

    /// A registry like the one `feast apply` writes for tests/feast_repo, built by hand.
    fn sample_registry() -> Registry {
        let driver_features = vec![
            feature("conv_rate", ValueType::Float),
            feature("acc_rate", ValueType::Double),
            feature("avg_daily_trips", ValueType::Int64),
            feature("city", ValueType::String),
            feature("active", ValueType::Bool),
        ];
        let customer_features = vec![
            feature("lifetime_value", ValueType::Double),
            feature("tier", ValueType::Int64),
            feature("recent_scores", ValueType::DoubleList),
        ];
        let driver_source = file_source(
            "driver_stats_source",
            "data/driver_stats.parquet",
            "created",
        );
        let push = DataSource {
            r#type: SourceType::PushSource as i32,
            name: "driver_stats_push".into(),
            batch_source: Some(Box::new(driver_source.clone())),
            options: Some(SourceOptions::Push(PushOptions {})),
            ..DataSource::default()
        };
        let mut driver_view = view(
            "driver_hourly_stats",
            "driver",
            driver_features.clone(),
            2 * 86_400,
            driver_source,
        );
        driver_view.stream_source = Some(push.clone());
        let customer_view = view(
            "customer_profile",
            "customer",
            customer_features.clone(),
            36 * 3600,
            file_source("customer_source", "data/customer_profile.parquet", ""),
        );
        let request = DataSource {
            r#type: SourceType::RequestSource as i32,
            name: "trip_request".into(),
            options: Some(SourceOptions::Request(RequestDataOptions {
                schema: vec![feature("distance_km", ValueType::Double)],
            })),
            ..DataSource::default()
        };
        let odfv = OnDemandFeatureViewSpec {
            name: "trip_estimate".into(),
            project: "rides".into(),
            features: vec![feature("expected_conversions", ValueType::Double)],
            sources: BTreeMap::from([
                (
                    "driver_hourly_stats".to_string(),
                    OnDemandSource {
                        source: Some(OnDemandSourceKind::FeatureViewProjection(projection(
                            "driver_hourly_stats",
                            &driver_features,
                        ))),
                    },
                ),
                (
                    "trip_request".to_string(),
                    OnDemandSource {
                        source: Some(OnDemandSourceKind::RequestDataSource(Box::new(
                            request.clone(),
                        ))),
                    },
                ),
            ]),
            feature_transformation: Some(FeatureTransformation {
                user_defined_function: Some(UserDefinedFunction {
                    name: "trip_estimate".into(),
                    body_text: "def trip_estimate(inputs):\n    return inputs\n".into(),
                    mode: "pandas".into(),
                }),
                substrait_transformation: None,
            }),
            mode: "pandas".into(),
            ..OnDemandFeatureViewSpec::default()
        };
        let service = FeatureServiceSpec {
            name: "driver_activity".into(),
            project: "rides".into(),
            features: vec![
                projection(
                    "driver_hourly_stats",
                    &[driver_features[0].clone(), driver_features[2].clone()],
                ),
                projection("customer_profile", &customer_features),
                projection(
                    "trip_estimate",
                    &[feature("expected_conversions", ValueType::Double)],
                ),
            ],
            owner: "ml@example.com".into(),
            ..FeatureServiceSpec::default()
        };
        Registry {
            entities: vec![
                entity("driver", "driver_id", ValueType::Int64),
                entity("customer", "customer_id", ValueType::String),
                entity("__dummy", "__dummy_id", ValueType::Invalid),
            ],
            feature_views: vec![
                FeatureView {
                    spec: Some(driver_view),
                },
                FeatureView {
                    spec: Some(customer_view),
                },
            ],
            data_sources: vec![push, request],
            on_demand_feature_views: vec![OnDemandFeatureView { spec: Some(odfv) }],
            feature_services: vec![FeatureService {
                spec: Some(service),
            }],
            ..Registry::default()
        }
    }

    fn config(online_store: FeastOnlineStore) -> FeastConfig {
        FeastConfig {
            project: "rides".into(),
            provider: "local".into(),
            registry: PathBuf::from("/feast/data/registry.db"),
            online_store,
            offline_store: "file".into(),
            entity_key_serialization_version: 3,
            other_keys: Vec::new(),
        }
    }

    fn redis() -> FeastOnlineStore {
        FeastOnlineStore::Redis {
            connection_string: "10.0.0.5:6379,password=secret".into(),
            redis_type: "redis_sentinel".into(),
            sentinel_master: Some("primary".into()),
            key_ttl_seconds: Some(86_400),
            other_options: Vec::new(),
        }
    }

    fn locations() -> Locations {
        Locations {
            repo_dir: PathBuf::from("/work/feast_repo"),
            output_dir: PathBuf::from("/work/quiver"),
        }
    }

    /// Encodes and decodes `registry` (as `feast apply` would have written it), then converts it.
    fn import(config: &FeastConfig, registry: &Registry) -> Conversion {
        let bytes = registry.encode_to_vec();
        let decoded = decode_registry(&bytes, Path::new("registry.db")).unwrap();
        assert_eq!(&decoded, registry);
        convert(config, &decoded, &locations())
    }

    fn notes_about<'a>(c: &'a Conversion, subject: &str) -> Vec<&'a str> {
        c.notes
            .iter()
            .filter(|n| n.subject == subject)
            .map(|n| n.message.as_str())
            .collect()
    }

    #[test]
    fn a_hand_built_registry_decodes_into_its_entities_views_services_and_push_source() {
        let c = import(&config(redis()), &sample_registry());
        let entities: Vec<_> = c
            .entities
            .iter()
            .map(|e| (e.name.as_str(), e.join_key.as_str(), e.value_type))
            .collect();
        assert_eq!(
            entities,
            [
                ("customer", "customer_id", "string"),
                ("driver", "driver_id", "int64")
            ]
        );
        let driver = c
            .feature_views
            .iter()
            .find(|v| v.name == "driver_hourly_stats")
            .unwrap();
        let schema: Vec<_> = driver
            .schema
            .iter()
            .map(|f| (f.name.as_str(), f.dtype.as_str()))
            .collect();
        assert_eq!(
            schema,
            [
                ("conv_rate", "float32"),
                ("acc_rate", "float64"),
                ("avg_daily_trips", "int64"),
                ("city", "string"),
                ("active", "bool")
            ]
        );
        assert_eq!(driver.ttl.as_deref(), Some("2d"));
        assert_eq!(driver.path, "../feast_repo/data/driver_stats.parquet");
        assert_eq!(driver.created_timestamp_column.as_deref(), Some("created"));
        let customer = c
            .feature_views
            .iter()
            .find(|v| v.name == "customer_profile")
            .unwrap();
        assert_eq!(customer.ttl.as_deref(), Some("36h"));
        assert_eq!(customer.schema[2].dtype, "list<float64>");
        assert_eq!(customer.created_timestamp_column, None);
        assert_eq!(c.push_sources.len(), 1);
        assert_eq!(c.push_sources[0].name, "driver_stats_push");
        assert_eq!(c.push_sources[0].feature_view, "driver_hourly_stats");
        // The view reads one file: online pushes only, and the note says how to allow offline ones.
        let why = c.push_sources[0].online_only.as_deref().unwrap();
        assert!(
            why.contains("(e.g. ../feast_repo/data/driver_stats/)"),
            "{why}"
        );
        assert_eq!(notes_about(&c, "push_sources.driver_stats_push"), [why]);
        assert_eq!(
            c.feature_services[0].features,
            [
                "driver_hourly_stats:conv_rate",
                "driver_hourly_stats:avg_daily_trips",
                "customer_profile"
            ]
        );
        assert_eq!(
            c.feature_services[0].comment.as_deref(),
            Some("owner: ml@example.com")
        );
        assert_eq!(
            c.online_store,
            [
                ("type", "redis"),
                ("layout", "feast"),
                ("connection_string", "10.0.0.5:6379,password=secret"),
                ("redis_type", "redis_sentinel"),
                ("sentinel_master", "primary"),
                ("key_ttl_seconds", "86400"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn a_python_on_demand_view_is_listed_with_its_stub_and_left_out_of_services() {
        let c = import(&config(redis()), &sample_registry());
        let odfv = &c.on_demand_views[0];
        assert_eq!(odfv.sources, ["driver_hourly_stats"]);
        assert_eq!(odfv.request_fields[0].name, "distance_km");
        assert_eq!(odfv.inputs.len(), 5);
        assert_eq!(
            odfv.service_refs,
            [("driver_activity".to_string(), "trip_estimate".to_string())]
        );
        let notes = notes_about(&c, "on_demand_feature_views.trip_estimate");
        assert!(
            notes
                .iter()
                .any(|n| n.contains("transforms/trip_estimate/")),
            "{notes:?}"
        );
        let notes = notes_about(&c, "feature_services.driver_activity");
        assert!(
            notes.iter().any(|n| n.contains("trip_estimate")),
            "{notes:?}"
        );

        let files = stub::crate_files(odfv, Path::new("/checkout/sdk"));
        let lib = &files[1].1;
        assert!(lib.contains("pub conv_rate: Option<f32>,"), "{lib}");
        assert!(lib.contains("pub distance_km: f64,"), "{lib}");
        assert!(
            lib.contains("pub expected_conversions: Option<f64>,"),
            "{lib}"
        );
        assert!(lib.contains("expected_conversions: None }"), "{lib}");
        assert!(lib.contains("// def trip_estimate(inputs):"), "{lib}");
        let manifest = &files[0].1;
        assert!(
            manifest.contains("quiver-sdk = { path = \"/checkout/sdk\" }"),
            "{manifest}"
        );
        assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
    }

    #[test]
    fn the_written_document_is_a_valid_quiver_registry_with_the_notes_on_top() {
        let mut registry = sample_registry();
        // A directory source, so the push source is written as a live entry.
        let spec = registry.feature_views[0].spec.as_mut().unwrap();
        let Some(SourceOptions::File(file)) = &mut spec.batch_source.as_mut().unwrap().options
        else {
            unreachable!()
        };
        file.uri = "data/driver_stats".into();
        let c = import(
            &config(FeastOnlineStore::Sqlite {
                path: "data/online.db".into(),
            }),
            &registry,
        );
        assert_eq!(c.push_sources[0].online_only, None);
        let yaml = render::render(&c, "/work/feast_repo");
        let registry = crate::config::load_str(&yaml, Path::new("/work/quiver"))
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(registry.feature_views.len(), 2);
        assert_eq!(registry.feature_services.len(), 1);
        assert_eq!(registry.push_sources.len(), 1);
        assert!(registry.on_demand_views.is_empty());
        assert!(
            yaml.contains("#   - online_store: Feast's SQLite store"),
            "{yaml}"
        );
        assert!(
            yaml.contains("# on_demand_feature_views:\n#   - name: trip_estimate"),
            "{yaml}"
        );
        // Uncommented, the view's entry is valid too (once its module is built).
        let (before, block) = yaml.split_once("# on_demand_feature_views:\n").unwrap();
        let (block, after) = block.split_once("\n\n").unwrap();
        let block: String = block
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .map(|l| format!("{l}\n"))
            .collect();
        let enabled = format!("{before}on_demand_feature_views:\n{block}\n{after}");
        let registry = crate::config::load_str(&enabled, Path::new("/work/quiver"))
            .unwrap_or_else(|e| panic!("{e}\n{enabled}"));
        assert_eq!(registry.on_demand_views.len(), 1);
    }

    #[test]
    fn sources_quiver_cannot_read_leave_their_views_out_with_a_note() {
        let mut registry = sample_registry();
        let bigquery = DataSource {
            r#type: SourceType::BatchBigquery as i32,
            name: "rides_bq".into(),
            ..DataSource::default()
        };
        registry.feature_views[1]
            .spec
            .as_mut()
            .unwrap()
            .batch_source = Some(bigquery);
        let mut remote = file_source("remote", "s3://bucket/drivers.parquet", "");
        let spec = registry.feature_views[0].spec.as_mut().unwrap();
        std::mem::swap(spec.batch_source.as_mut().unwrap(), &mut remote);
        let c = import(&config(redis()), &registry);
        assert!(c.feature_views.is_empty());
        let bq = notes_about(&c, "feature_views.customer_profile");
        assert!(bq[0].contains("BigQuery"), "{bq:?}");
        let s3 = notes_about(&c, "feature_views.driver_hourly_stats");
        assert!(s3[0].contains("s3://bucket/drivers.parquet"), "{s3:?}");
        // Their dependents are listed, not dropped silently.
        assert!(!notes_about(&c, "push_sources.driver_stats_push").is_empty());
        let service = notes_about(&c, "feature_services.driver_activity");
        assert!(
            service
                .iter()
                .any(|n| n.contains("customer_profile left out")),
            "{service:?}"
        );
    }

    #[test]
    fn kafka_stream_sources_and_stream_feature_views_are_listed() {
        let mut registry = sample_registry();
        registry.feature_views[0]
            .spec
            .as_mut()
            .unwrap()
            .stream_source = Some(DataSource {
            r#type: SourceType::StreamKafka as i32,
            name: "driver_events".into(),
            ..DataSource::default()
        });
        registry.stream_feature_views.push(StreamFeatureView {
            spec: Some(NamedSpec {
                name: "driver_5m".into(),
                project: "rides".into(),
            }),
        });
        let c = import(&config(redis()), &registry);
        assert_eq!(
            c.feature_views.len(),
            2,
            "the view stays, with its batch source"
        );
        let notes = notes_about(&c, "feature_views.driver_hourly_stats");
        assert!(
            notes[0].contains("Kafka stream source driver_events"),
            "{notes:?}"
        );
        assert!(!notes_about(&c, "stream_feature_views.driver_5m").is_empty());
    }

    #[test]
    fn unsupported_types_field_mappings_and_entity_types_are_listed() {
        let mut registry = sample_registry();
        let spec = registry.feature_views[1].spec.as_mut().unwrap();
        spec.features.push(feature("attributes", ValueType::Map));
        spec.batch_source
            .as_mut()
            .unwrap()
            .field_mapping
            .insert("ltv".into(), "lifetime_value".into());
        registry.entities[0] = entity("driver", "driver_id", ValueType::UnixTimestamp);
        let c = import(&config(redis()), &registry);
        assert!(!notes_about(&c, "feature_views.customer_profile.attributes").is_empty());
        let notes = notes_about(&c, "feature_views.customer_profile");
        assert!(notes[0].contains("ltv -> lifetime_value"), "{notes:?}");
        assert!(notes_about(&c, "entities.driver")[0].contains("UnixTimestamp"));
        assert!(notes_about(&c, "feature_views.driver_hourly_stats")[0].contains("entity driver"));
        assert_eq!(c.feature_views.len(), 1);
    }

    #[test]
    fn stores_and_key_versions_quiver_cannot_use_as_they_are_are_listed() {
        let mut cfg = config(redis());
        cfg.entity_key_serialization_version = 2;
        cfg.offline_store = "snowflake.offline".into();
        let c = import(&cfg, &sample_registry());
        assert!(notes_about(&c, "entity_key_serialization_version")[0].contains("version 3"));
        assert!(notes_about(&c, "offline_store")[0].contains("snowflake.offline"));

        let c = import(
            &config(FeastOnlineStore::Other {
                store_type: "dynamodb".into(),
            }),
            &sample_registry(),
        );
        assert_eq!(
            c.online_store[0],
            ("type".to_string(), "sqlite".to_string())
        );
        assert!(notes_about(&c, "online_store")[0].contains("dynamodb"));
    }

    #[test]
    fn service_aliases_and_join_key_maps_are_listed() {
        let mut registry = sample_registry();
        let service = registry.feature_services[0].spec.as_mut().unwrap();
        service.features[1].feature_view_name_alias = "profile".into();
        service.features[1]
            .join_key_map
            .insert("customer_id".into(), "rider_id".into());
        let c = import(&config(redis()), &registry);
        let notes = notes_about(&c, "feature_services.driver_activity");
        assert!(
            notes.iter().any(|n| n.contains("alias profile")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("join key mapping")),
            "{notes:?}"
        );
    }

    #[test]
    fn ttls_are_written_in_their_largest_whole_unit() {
        let d = |seconds, nanos| convert::format_duration(&Duration { seconds, nanos });
        assert_eq!(d(172_800, 0), "2d");
        assert_eq!(d(5_400, 0), "90m");
        assert_eq!(d(17, 0), "17s");
        assert_eq!(d(1, 500_000_000), "1500ms");
    }

    #[test]
    fn source_paths_resolve_from_the_output_directory() {
        let rel = |from: &str, to: &str| convert::relative_path(Path::new(from), Path::new(to));
        assert_eq!(
            rel("/a/b", "/a/b/data/x.parquet"),
            Path::new("data/x.parquet")
        );
        assert_eq!(
            rel("/a/out", "/a/repo/./data/x"),
            Path::new("../repo/data/x")
        );
        assert_eq!(rel("/a/b", "/a/b"), Path::new("."));
    }

    fn repo_with(registry: Option<&Registry>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("feature_store.yaml"),
            "project: rides\nregistry: data/registry.db\nprovider: local\n",
        )
        .unwrap();
        if let Some(registry) = registry {
            std::fs::create_dir_all(dir.path().join("data")).unwrap();
            std::fs::write(
                dir.path().join("data/registry.db"),
                registry.encode_to_vec(),
            )
            .unwrap();
        }
        dir
    }

    fn options(dir: &Path) -> ImportOptions {
        ImportOptions {
            output: dir.join("quiver/feature_store.yaml"),
            force: false,
            sdk_dir: PathBuf::from("/checkout/sdk"),
        }
    }

    #[test]
    fn a_missing_registry_is_an_error_naming_it_and_suggesting_feast_apply() {
        let repo = repo_with(None);
        let err = import_repository(repo.path(), &options(repo.path())).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, ImportError::RegistryMissing { .. }),
            "{message}"
        );
        assert!(message.contains("data/registry.db"), "{message}");
        assert!(message.contains("feast apply"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_a_registry_is_an_error_naming_it() {
        let repo = repo_with(None);
        std::fs::create_dir_all(repo.path().join("data")).unwrap();
        std::fs::write(
            repo.path().join("data/registry.db"),
            b"\xff\xff\xff not protobuf",
        )
        .unwrap();
        let err = import_repository(repo.path(), &options(repo.path())).unwrap_err();
        assert!(matches!(err, ImportError::DecodeRegistry { .. }), "{err}");
        assert!(err.to_string().contains("registry.db"), "{err}");
    }

    #[test]
    fn existing_files_are_replaced_only_with_force_and_never_feasts_own_file() {
        let repo = repo_with(Some(&sample_registry()));
        let mut opts = options(repo.path());
        let summary = import_repository(repo.path(), &opts).unwrap();
        assert!(
            summary.report().contains("trip_estimate"),
            "{}",
            summary.report()
        );
        assert!(
            repo.path()
                .join("quiver/transforms/trip_estimate/src/lib.rs")
                .is_file()
        );
        let err = import_repository(repo.path(), &opts).unwrap_err();
        assert!(matches!(err, ImportError::OutputExists { .. }), "{err}");
        opts.force = true;
        import_repository(repo.path(), &opts).unwrap();
        opts.output = repo.path().join("feature_store.yaml");
        let err = import_repository(repo.path(), &opts).unwrap_err();
        assert!(
            matches!(err, ImportError::OutputIsFeastConfig { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_directory_without_feature_store_yaml_is_not_a_repository() {
        let dir = tempfile::tempdir().unwrap();
        let err = import_repository(dir.path(), &options(dir.path())).unwrap_err();
        assert!(matches!(err, ImportError::NotARepository { .. }), "{err}");
    }
}
