//! `quiver init [dir]`: a working project in a directory of its own — `feature_store.yaml` over
//! the embedded SQLite store, a small Parquet file of sample data timed relative to now, one
//! transform crate that builds outside Quiver's repository, and a README with the next commands.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field as ArrowField, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;

use super::transform_crate::{Field, TransformCrate};
use super::{ScaffoldError, Written, check_sdk, check_target, write_files};

/// The sample feature view (and the directory of its Parquet source under `data/`).
pub const FEATURE_VIEW: &str = "driver_stats";
/// The sample on-demand view and its transform (crate, function and `.wasm`).
pub const TRANSFORM: &str = "transformed_conv_rate";
/// The sample feature service.
pub const FEATURE_SERVICE: &str = "driver_activity";
/// The sample push source.
pub const PUSH_SOURCE: &str = "driver_stats_push";
/// The drivers of the sample data (join key `driver_id`).
pub const DRIVERS: [i64; 5] = [1001, 1002, 1003, 1004, 1005];
/// Hourly rows per driver in the sample data, the latest an hour before `now`.
pub const HOURS: i64 = 3;

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// How to initialize.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The project directory (created if absent).
    pub dir: PathBuf,
    /// Write into a non-empty directory, replacing files of the same name.
    pub force: bool,
    /// The `quiver-sdk` crate the transform crate depends on by path.
    pub sdk_dir: PathBuf,
    /// "Now", in microseconds since the epoch: the sample rows are the hours before it.
    pub now_micros: i64,
}

/// What `quiver init` wrote.
#[derive(Debug, Clone)]
pub struct Initialized {
    /// The project directory.
    pub dir: PathBuf,
    /// The project's name in `feature_store.yaml`.
    pub project: String,
    /// The files written, relative to `dir`.
    pub written: Vec<Written>,
}

impl Initialized {
    /// What was written and what to do next, for the terminal.
    pub fn report(&self) -> String {
        format!(
            "Created the Quiver project \"{}\" in {}:\n{}\nNext (from {}; README.md says more):\n{}",
            self.project,
            self.dir.display(),
            super::report_lines(&self.dir, &self.written),
            self.dir.display(),
            next_commands()
        )
    }
}

/// A valid Quiver name from a directory name: other characters become `_`, a leading digit gets
/// a `_` before it, at most 128 characters; `quiver_project` when nothing is left.
pub fn project_name(dir_name: &str) -> String {
    let mut name: String = dir_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.trim_matches('_').is_empty() {
        return "quiver_project".into();
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        name.insert(0, '_');
    }
    name.truncate(128);
    name
}

/// Writes the project; refuses a non-empty directory unless `force`.
pub fn init(options: &InitOptions) -> Result<Initialized, ScaffoldError> {
    check_sdk(&options.sdk_dir)?;
    check_target(&options.dir, options.force)?;
    let absolute = options
        .dir
        .canonicalize()
        .or_else(|_| std::path::absolute(&options.dir))
        .unwrap_or_else(|_| options.dir.clone());
    let project = project_name(
        &absolute
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let data_file = PathBuf::from(format!("data/{FEATURE_VIEW}/{FEATURE_VIEW}.parquet"));
    let parquet =
        sample_parquet(options.now_micros).map_err(|message| ScaffoldError::SampleData {
            path: options.dir.join(&data_file),
            message,
        })?;
    let mut files: Vec<(PathBuf, Vec<u8>)> = vec![
        (
            "feature_store.yaml".into(),
            feature_store_yaml(&project).into_bytes(),
        ),
        ("README.md".into(), readme(&project).into_bytes()),
        (
            ".gitignore".into(),
            "# The online store and the built modules are made from the sources here.\n\
             /data/online_store.db*\n/transforms/wasm/*.wasm\n"
                .into(),
        ),
        (data_file, parquet),
    ];
    let crate_dir = PathBuf::from("transforms").join(TRANSFORM);
    for (path, text) in sample_transform().files(&options.sdk_dir) {
        files.push((crate_dir.join(path), text.into_bytes()));
    }
    let written = write_files(&options.dir, &files)?;
    // The watched module directory, empty until the transform is built.
    let wasm_dir = options.dir.join("transforms/wasm");
    std::fs::create_dir_all(&wasm_dir).map_err(|source| ScaffoldError::Write {
        path: wasm_dir,
        source,
    })?;
    Ok(Initialized {
        dir: options.dir.clone(),
        project,
        written,
    })
}

/// The sample transform: both rates plus a value the client sends.
pub fn sample_transform() -> TransformCrate {
    let field = |name: &str, dtype: &str| Field {
        name: name.into(),
        dtype: dtype.into(),
    };
    TransformCrate {
        view: TRANSFORM.into(),
        transform: TRANSFORM.into(),
        sources: vec![FEATURE_VIEW.into()],
        inputs: vec![field("conv_rate", "float32"), field("acc_rate", "float32")],
        request_fields: vec![field("val_to_add", "int64")],
        outputs: vec![
            field("conv_rate_plus_val", "float64"),
            field("acc_rate_plus_val", "float64"),
        ],
        generated_by: "`quiver init`".into(),
        about: "Edit the body, run `cargo test`, rebuild and copy the .wasm: a running\n\
                `quiver serve` picks the new module up within a second."
            .into(),
        body: Some(
            "    // i64 → f64 is exact up to 2^53, far beyond any value a client adds here.\n    \
             let val = row.val_to_add as f64;\n    \
             Output {\n        \
             conv_rate_plus_val: row.conv_rate.map(|c| f64::from(c) + val),\n        \
             acc_rate_plus_val: row.acc_rate.map(|a| f64::from(a) + val),\n    \
             }"
            .into(),
        ),
        tests: Some(
            "    #[test]\n    \
             fn the_request_value_is_added_to_each_rate() {\n        \
             let out = transformed_conv_rate(Input {\n            \
             conv_rate: Some(0.5),\n            \
             acc_rate: Some(0.25),\n            \
             val_to_add: 2,\n        \
             });\n        \
             assert_eq!(out.conv_rate_plus_val, Some(2.5));\n        \
             assert_eq!(out.acc_rate_plus_val, Some(2.25));\n    \
             }\n\n    \
             #[test]\n    \
             fn a_missing_rate_gives_no_sum() {\n        \
             let out = transformed_conv_rate(Input {\n            \
             conv_rate: None,\n            \
             acc_rate: Some(0.5),\n            \
             val_to_add: 1,\n        \
             });\n        \
             assert_eq!(out.conv_rate_plus_val, None);\n        \
             assert_eq!(out.acc_rate_plus_val, Some(1.5));\n    \
             }"
            .into(),
        ),
        trailer: String::new(),
    }
}

/// The sample `conv_rate` of a driver (index `d`) `h` hours before the latest row: exact in
/// binary (multiples of 1/64), so served values compare exactly.
pub fn sample_conv_rate(d: usize, h: i64) -> f32 {
    (16 + 4 * d as i64 + h) as f32 / 64.0
}

/// The sample `acc_rate` of a driver (index `d`) `h` hours before the latest row.
pub fn sample_acc_rate(d: usize, h: i64) -> f32 {
    (48 - 2 * d as i64 - h) as f32 / 64.0
}

/// The sample Parquet file: [`HOURS`] hourly rows per driver, the latest an hour before `now`.
pub fn sample_parquet(now_micros: i64) -> Result<Vec<u8>, String> {
    let (mut ids, mut conv, mut acc, mut trips, mut times) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (d, id) in DRIVERS.iter().enumerate() {
        for h in (0..HOURS).rev() {
            ids.push(*id);
            conv.push(sample_conv_rate(d, h));
            acc.push(sample_acc_rate(d, h));
            trips.push(10 * (d as i64 + 1) + h);
            times.push(now_micros - (h + 1) * MICROS_PER_HOUR);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        ArrowField::new("driver_id", DataType::Int64, false),
        ArrowField::new("conv_rate", DataType::Float32, true),
        ArrowField::new("acc_rate", DataType::Float32, true),
        ArrowField::new("avg_daily_trips", DataType::Int64, true),
        ArrowField::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(Float32Array::from(conv)),
        Arc::new(Float32Array::from(acc)),
        Arc::new(Int64Array::from(trips)),
        Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).map_err(|e| e.to_string())?;
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.close().map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// The project's `feature_store.yaml`.
pub fn feature_store_yaml(project: &str) -> String {
    format!(
        r#"# The Quiver project "{project}", created by `quiver init`; README.md lists the next commands.
# Every field is described in Quiver's docs/configuration.md.
project: {project}

# The embedded store: one SQLite file, no server. Redis and Redis Cluster are other types.
online_store:
  type: sqlite
  path: data/online_store.db

entities:
  - name: driver
    join_keys: [driver_id]
    value_type: int64
    description: A driver.

feature_views:
  - name: {FEATURE_VIEW}
    entities: [driver]
    # Values older than this are answered OUTSIDE_MAX_AGE and not materialized. The sample rows
    # are the hours before `quiver init` ran, so they are served for the next 30 days.
    ttl: 30d
    schema:
      - {{ name: conv_rate, dtype: float32 }}
      - {{ name: acc_rate, dtype: float32 }}
      - {{ name: avg_daily_trips, dtype: int64 }}
    source:
      path: data/{FEATURE_VIEW}            # every *.parquet below it
      timestamp_field: event_timestamp

# Computed at request time by transforms/wasm/{TRANSFORM}.wasm, built from the crate
# transforms/{TRANSFORM}/. Until that module is built and copied there, `quiver validate`
# names it and lookups of this view answer 503 TRANSFORM_UNAVAILABLE; {FEATURE_VIEW} is served
# as usual.
on_demand_feature_views:
  - name: {TRANSFORM}
    transform: {TRANSFORM}
    sources: [{FEATURE_VIEW}]
    request_fields:
      - {{ name: val_to_add, dtype: int64 }}
    schema:
      - {{ name: conv_rate_plus_val, dtype: float64 }}
      - {{ name: acc_rate_plus_val, dtype: float64 }}

feature_services:
  - name: {FEATURE_SERVICE}
    features:
      - {FEATURE_VIEW}:conv_rate
      - {FEATURE_VIEW}:avg_daily_trips
      - {TRANSFORM}

# POST /push with push_source_name {PUSH_SOURCE} writes fresh rows to the online store and
# appends them under data/{FEATURE_VIEW}/.
push_sources:
  - name: {PUSH_SOURCE}
    feature_view: {FEATURE_VIEW}

transforms:
  dir: transforms/wasm

server:
  bind: 127.0.0.1:6566
"#
    )
}

/// The next commands, in order (run from the project directory).
pub fn next_commands() -> String {
    format!(
        r#"  quiver validate --no-data             # the document
  quiver materialize-incremental now    # data/{FEATURE_VIEW} → data/online_store.db
  (cd transforms/{TRANSFORM} && cargo test && cargo build --release --target wasm32-unknown-unknown \
     && cp target/wasm32-unknown-unknown/release/{TRANSFORM}.wasm ../wasm/)
  quiver validate                       # the document, the data and the module
  quiver serve                          # http://127.0.0.1:6566
  curl -s -X POST http://127.0.0.1:6566/get-online-features \
    -d '{{"feature_service": "{FEATURE_SERVICE}", "entities": {{"driver_id": [1001, 1002], "val_to_add": [10, 20]}}}}'
"#
    )
}

fn readme(project: &str) -> String {
    format!(
        r#"# {project}

A Quiver project, created by `quiver init`.

| path | what |
|---|---|
| `feature_store.yaml` | the registry: entity `driver`, feature view `{FEATURE_VIEW}`, on-demand view `{TRANSFORM}`, feature service `{FEATURE_SERVICE}`, push source `{PUSH_SOURCE}` |
| `data/{FEATURE_VIEW}/` | the view's Parquet source: {drivers} drivers, {HOURS} hourly rows each, the latest an hour before `quiver init` ran |
| `data/online_store.db` | the embedded online store, written by `quiver materialize` |
| `transforms/{TRANSFORM}/` | the on-demand view's transform, a Rust crate of its own (its own `[workspace]`, `quiver-sdk` by path) |
| `transforms/wasm/` | the built modules Quiver loads (`transforms.dir`), watched while serving |

Run these from this directory, with `quiver` on your `PATH`.

## Load the sample data into the online store

```sh
quiver validate --no-data
quiver materialize-incremental now
```

## Build the transform

Once: `rustup target add wasm32-unknown-unknown`. Then:

```sh
cd transforms/{TRANSFORM}
cargo test
cargo build --release --target wasm32-unknown-unknown
cp target/wasm32-unknown-unknown/release/{TRANSFORM}.wasm ../wasm/
cd ../..
quiver validate
```

Until the module is in `transforms/wasm/`, `quiver validate` reports it missing (and exits 1),
and lookups of `{TRANSFORM}` answer 503 `TRANSFORM_UNAVAILABLE`; `{FEATURE_VIEW}` is served
as usual. A running server loads a new module within a second of the copy.

## Serve and look up

```sh
quiver serve
```

In another terminal:

```sh
curl -s -X POST http://127.0.0.1:6566/get-online-features \
  -d '{{"features": ["{FEATURE_VIEW}:conv_rate", "{FEATURE_VIEW}:acc_rate"], "entities": {{"driver_id": [1001, 1002]}}}}'
curl -s -X POST http://127.0.0.1:6566/get-online-features \
  -d '{{"feature_service": "{FEATURE_SERVICE}", "entities": {{"driver_id": [1001, 1002], "val_to_add": [10, 20]}}}}'
```

## Next

- Another transform: `quiver new-transform NAME --inputs conv_rate:float32 --request x:float64
  --outputs y:float64 --sources {FEATURE_VIEW}` writes `transforms/NAME/` and prints the
  `on_demand_feature_views` entry to add here.
- Your own data: point a feature view's `source.path` at your Parquet files.
- The sample rows are served for 30 days (the view's `ttl`); after that they are answered
  `OUTSIDE_MAX_AGE`.
"#,
        drivers = DRIVERS.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_become_valid_project_names() {
        assert_eq!(project_name("fraud-detection"), "fraud-detection");
        assert_eq!(project_name("My Project.v2"), "My_Project_v2");
        assert_eq!(project_name("2026_models"), "_2026_models");
        assert_eq!(project_name(""), "quiver_project");
        assert_eq!(project_name("..."), "quiver_project");
        assert_eq!(project_name(&"x".repeat(300)).len(), 128);
        for name in ["My Project.v2", "2026_models", "é"] {
            crate::registry::Name::new(&project_name(name)).unwrap();
        }
    }

    #[test]
    fn the_generated_registry_loads_with_every_section() {
        let dir = tempfile::tempdir().unwrap();
        let registry = crate::config::load_str(&feature_store_yaml("demo"), dir.path())
            .unwrap_or_else(|e| {
                panic!("{e}");
            });
        assert_eq!(registry.project.as_str(), "demo");
        assert_eq!(registry.entities.len(), 1);
        assert_eq!(registry.feature_views.len(), 1);
        assert_eq!(registry.on_demand_views.len(), 1);
        assert_eq!(registry.feature_services.len(), 1);
        assert!(registry.transforms.dir.ends_with("transforms/wasm"));
    }

    #[test]
    fn init_writes_the_project_and_refuses_to_write_it_twice() {
        let dir = tempfile::tempdir().unwrap();
        let options = InitOptions {
            dir: dir.path().join("My Project"),
            force: false,
            sdk_dir: super::super::sdk_dir(None),
            now_micros: 1_800_000_000_000_000,
        };
        let done = init(&options).unwrap();
        assert_eq!(done.project, "My_Project");
        for file in [
            "feature_store.yaml",
            "README.md",
            "data/driver_stats/driver_stats.parquet",
            "transforms/transformed_conv_rate/Cargo.toml",
            "transforms/transformed_conv_rate/src/lib.rs",
        ] {
            assert!(options.dir.join(file).is_file(), "{file}");
        }
        assert!(options.dir.join("transforms/wasm").is_dir());
        let report = done.report();
        assert!(
            report.contains("quiver materialize-incremental now"),
            "{report}"
        );
        let e = init(&options).unwrap_err().to_string();
        assert!(e.contains("is not empty") && e.contains("--force"), "{e}");
        let again = init(&InitOptions {
            force: true,
            ..options
        })
        .unwrap();
        assert!(again.written.iter().all(|w| w.replaced));
    }
}
