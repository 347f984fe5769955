//! Checks that a registry can run on the data and modules at hand (`quiver validate`): every
//! feature view's source exists and has its columns with readable types, and every on-demand
//! view's transform module exists and loads. Only Parquet footers and module files are read.
//!
//! These are separate from `config::load`, which stays a pure check of the document: a server or
//! a test may load a registry before its data or modules arrive.

use std::fmt;
use std::path::{Path, PathBuf};

use arrow::datatypes::Schema;

use super::OfflineError;
use super::columns::{check_column, check_scalar, check_timestamp};
use super::source::source_files;
use crate::registry::{FeatureView, Registry};
use crate::storage::DataFile;
use crate::transform::TransformEngine;

/// One problem with a view's data or module, named by the view's place in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataProblem {
    /// Where the view is declared: `feature_views[1]`, `on_demand_feature_views[0]`.
    pub path: String,
    /// The view's name.
    pub view: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DataProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.path, self.view, self.message)
    }
}

/// Every problem with the feature views' sources: a path that matches nothing, a file that is not
/// Parquet, a missing column, a column whose type cannot be read as declared. Every file of every
/// view is checked (footers only), so one run lists them all.
pub fn check_sources(registry: &Registry) -> Vec<DataProblem> {
    let mut problems = Vec::new();
    for (i, view) in registry.feature_views.iter().enumerate() {
        let mut report = |message: String| {
            problems.push(DataProblem {
                path: format!("feature_views[{i}]"),
                view: view.name.to_string(),
                message,
            })
        };
        let spec = &view.source.path_spec;
        let files = match source_files(&view.source) {
            Ok(files) => files,
            Err(OfflineError::Source { message, .. }) if message == "no such file or directory" => {
                report(format!("source {spec} does not exist"));
                continue;
            }
            Err(e) => {
                report(format!("source {spec}: {}", shown(registry, e)));
                continue;
            }
        };
        if files.is_empty() {
            report(if view.source.location.is_object() {
                format!("source {spec} holds no .parquet object")
            } else if view.source.location.as_local().is_some_and(Path::is_dir) {
                format!("source {spec} is a directory with no .parquet file in it")
            } else {
                format!("source {spec} matches no file")
            });
        }
        for file in &files {
            match file.open() {
                Ok(input) => {
                    for e in column_problems(view, file, input.schema()) {
                        report(shown(registry, e));
                    }
                }
                Err(e) => report(shown(registry, e.into())),
            }
        }
    }
    problems
}

/// Every problem with the on-demand views' modules: `<transforms.dir>/<transform>.wasm` missing,
/// unreadable, or not a module Quiver can serve (it must compile, import only Quiver's host
/// functions and export the ABI).
pub fn check_transforms(registry: &Registry) -> Vec<DataProblem> {
    let mut problems = Vec::new();
    let mut engine = None;
    for (i, view) in registry.on_demand_views.iter().enumerate() {
        let mut report = |message: String| {
            problems.push(DataProblem {
                path: format!("on_demand_feature_views[{i}]"),
                view: view.name.to_string(),
                message,
            })
        };
        let file = registry
            .transforms
            .dir
            .join(format!("{}.wasm", view.transform));
        let name = relative(registry, &file);
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report(format!(
                    "transform module {} does not exist: build \"{}\" with --target \
                     wasm32-unknown-unknown and copy the .wasm into transforms.dir",
                    name.display(),
                    view.transform
                ));
                continue;
            }
            Err(e) => {
                report(format!(
                    "transform module {} cannot be read: {e}",
                    name.display()
                ));
                continue;
            }
        };
        if engine.is_none() {
            match TransformEngine::new() {
                Ok(e) => engine = Some(e),
                Err(e) => {
                    report(format!("cannot start the transform engine: {e}"));
                    continue;
                }
            }
        }
        let engine = engine.as_ref().expect("set above");
        if let Err(e) = engine.load(view.transform.as_str(), &bytes) {
            report(format!("transform module {}: {e}", name.display()));
        }
    }
    problems
}

/// Every missing or mistyped column of a view in one file's schema.
fn column_problems(view: &FeatureView, file: &DataFile, schema: &Schema) -> Vec<OfflineError> {
    let mut problems = Vec::new();
    let mut check =
        |column: &str, check: &dyn Fn(&arrow::datatypes::DataType) -> Result<(), String>| {
            match schema.field_with_name(column) {
                Ok(field) => {
                    if let Err(message) = check(field.data_type()) {
                        problems.push(OfflineError::ColumnType {
                            file: file.to_string(),
                            column: column.to_string(),
                            message,
                        });
                    }
                }
                Err(_) => problems.push(OfflineError::MissingColumn {
                    file: file.to_string(),
                    column: column.to_string(),
                }),
            }
        };
    for jk in &view.join_keys {
        check(jk.name.as_str(), &|dt| check_scalar(dt, jk.dtype));
    }
    check(&view.source.timestamp_field, &check_timestamp);
    if let Some(created) = &view.source.created_timestamp_column {
        check(created, &check_timestamp);
    }
    for field in &view.fields {
        check(field.name.as_str(), &|dt| check_column(dt, field.dtype));
    }
    problems
}

/// An error's text with paths under the registry's directory shown relative to it.
fn shown(registry: &Registry, e: OfflineError) -> String {
    let text = e.to_string();
    let base = registry.base_dir.to_string_lossy();
    if base.is_empty() || base == "." {
        return text;
    }
    text.replace(&format!("{base}/"), "")
}

/// `path` relative to the registry's directory when it is below it.
fn relative(registry: &Registry, path: &Path) -> PathBuf {
    path.strip_prefix(&registry.base_dir)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(dir: &Path, source: &str) -> Registry {
        let yaml = format!(
            "project: p\nentities: [{{name: user}}]\nfeature_views:\n  - name: stats\n    \
             entities: [user]\n    schema: [{{name: score, dtype: float32}}]\n    \
             source: {{path: \"{source}\"}}\n"
        );
        crate::config::load_str(&yaml, dir).unwrap()
    }

    #[test]
    fn a_glob_that_matches_nothing_and_a_directory_without_parquet_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        std::fs::write(dir.path().join("empty/readme.txt"), "no data").unwrap();
        for (source, expected) in [
            (
                "data/*.parquet",
                "feature_views[0] (stats): source data/*.parquet matches no file",
            ),
            (
                "empty",
                "feature_views[0] (stats): source empty is a directory with no .parquet file in it",
            ),
        ] {
            let problems = check_sources(&registry(dir.path(), source));
            let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
            assert_eq!(shown, [expected]);
        }
    }

    #[test]
    fn a_file_that_is_not_parquet_is_reported_with_its_view() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stats.parquet"), "not parquet").unwrap();
        let problems = check_sources(&registry(dir.path(), "stats.parquet"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        let shown = problems[0].to_string();
        assert!(
            shown.starts_with(
                "feature_views[0] (stats): stats.parquet: not a readable Parquet file"
            ),
            "{shown}"
        );
    }
}
