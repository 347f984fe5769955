//! `quiver new-transform NAME`: a transform crate with typed `Input` and `Output` structs from
//! `name:dtype` fields, a placeholder body and its unit test, plus the matching
//! `on_demand_feature_views` entry to paste into `feature_store.yaml`.

use std::path::PathBuf;

use super::transform_crate::{Field, KEYWORDS, TransformCrate};
use super::{ScaffoldError, Written, check_sdk, check_target, write_files};
use crate::registry::Name;
use crate::types::ValueType;

/// What to generate.
#[derive(Debug, Clone)]
pub struct NewTransform {
    /// The transform's name: the on-demand view, the crate, the function and the `.wasm` file.
    pub name: String,
    /// The directory the crate goes into (as `<dir>/<name>/`).
    pub dir: PathBuf,
    /// Features the transform reads, as `name:dtype`.
    pub inputs: Vec<String>,
    /// Request fields, as `name:dtype`.
    pub request: Vec<String>,
    /// Outputs, as `name:dtype`; none means one `value:float64`.
    pub outputs: Vec<String>,
    /// The feature views holding the inputs (the snippet's `sources`).
    pub sources: Vec<String>,
    /// The `quiver-sdk` crate to depend on by path.
    pub sdk_dir: PathBuf,
    /// Write into an existing non-empty crate directory, replacing its files.
    pub force: bool,
}

/// What was generated.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The crate directory.
    pub crate_dir: PathBuf,
    /// The files written, relative to it.
    pub written: Vec<Written>,
    /// The `on_demand_feature_views` entry.
    pub snippet: String,
    /// The crate's description.
    pub spec: TransformCrate,
}

impl Generated {
    /// What was written and what to do next, for the terminal.
    pub fn report(&self) -> String {
        let lib = &self.spec.transform;
        let mut out = format!(
            "Generated the transform crate {}:\n{}",
            self.crate_dir.display(),
            super::report_lines(&self.crate_dir, &self.written)
        );
        if self.spec.sources.is_empty() && !self.spec.inputs.is_empty() {
            out.push_str(
                "\nNote: no --sources given; fill in `sources` with the feature views holding the inputs.\n",
            );
        }
        out.push_str(&format!(
            "\nAdd this to feature_store.yaml (merge it into an existing on_demand_feature_views list):\n\n{}\n\
             Next:\n  \
             cd {dir} && cargo test\n  \
             cargo build --release --target wasm32-unknown-unknown\n  \
             cp target/wasm32-unknown-unknown/release/{lib}.wasm <transforms.dir>/\n",
            self.snippet,
            dir = self.crate_dir.display(),
        ));
        out
    }
}

/// Checks a name as the transform's: a valid Quiver name that is also a Rust library name (no
/// `-`, no keyword), since it names the crate's library, its function and its `.wasm`.
pub fn check_transform_name(name: &str) -> Result<(), ScaffoldError> {
    let invalid = |reason: String| ScaffoldError::InvalidName {
        what: "transform name",
        name: name.to_string(),
        reason,
    };
    Name::new(name).map_err(invalid)?;
    if name.contains('-') {
        return Err(invalid(format!(
            "it names the crate's library and the .wasm file, which cannot hold '-'; use '_' ({})",
            name.replace('-', "_")
        )));
    }
    if KEYWORDS.contains(&name) || name == "_" {
        return Err(invalid("it is a Rust keyword".into()));
    }
    Ok(())
}

/// Parses `name:dtype` as the configuration does: the name a Quiver name, the dtype one
/// [`ValueType::parse`] reads.
pub fn parse_field(spec: &str, option: &'static str) -> Result<Field, ScaffoldError> {
    let invalid = |reason: String| ScaffoldError::InvalidField {
        option,
        spec: spec.to_string(),
        reason,
    };
    let (name, dtype) = spec
        .split_once(':')
        .ok_or_else(|| invalid("expected name:dtype, as in amount:float64".into()))?;
    let (name, dtype) = (name.trim(), dtype.trim());
    Name::new(name).map_err(invalid)?;
    let parsed = ValueType::parse(dtype).ok_or_else(|| {
        invalid(format!(
            "unknown type \"{dtype}\"; expected int32, int64, float32, float64, string, bool, \
             bytes, unix_timestamp or list<...> of one of them"
        ))
    })?;
    Ok(Field {
        name: name.to_string(),
        dtype: match parsed {
            ValueType::Scalar(s) => s.name().to_string(),
            ValueType::List(s) => format!("list<{}>", s.name()),
        },
    })
}

fn parse_fields(specs: &[String], option: &'static str) -> Result<Vec<Field>, ScaffoldError> {
    specs.iter().map(|s| parse_field(s, option)).collect()
}

/// The crate `options` describes, checked: names, dtypes, no field twice in one struct.
pub fn plan(options: &NewTransform) -> Result<TransformCrate, ScaffoldError> {
    check_transform_name(&options.name)?;
    for source in &options.sources {
        Name::new(source).map_err(|reason| ScaffoldError::InvalidName {
            what: "source view",
            name: source.clone(),
            reason,
        })?;
    }
    let inputs = parse_fields(&options.inputs, "inputs")?;
    let request_fields = parse_fields(&options.request, "request")?;
    let mut outputs = parse_fields(&options.outputs, "outputs")?;
    if outputs.is_empty() {
        outputs.push(Field {
            name: "value".into(),
            dtype: "float64".into(),
        });
    }
    let twice = |fields: &[&Field], option: &'static str| -> Result<(), ScaffoldError> {
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].iter().any(|g| g.name == f.name) {
                return Err(ScaffoldError::InvalidField {
                    option,
                    spec: format!("{}:{}", f.name, f.dtype),
                    reason: format!("\"{}\" is named twice in the transform's input", f.name),
                });
            }
        }
        Ok(())
    };
    twice(
        &inputs.iter().chain(&request_fields).collect::<Vec<_>>(),
        "request",
    )?;
    twice(&outputs.iter().collect::<Vec<_>>(), "outputs")?;
    Ok(TransformCrate {
        view: options.name.clone(),
        transform: options.name.clone(),
        sources: options.sources.clone(),
        inputs,
        request_fields,
        outputs,
        generated_by: "`quiver new-transform`".into(),
        about: String::new(),
        body: None,
        tests: None,
        trailer: String::new(),
    })
}

/// Checks `options` and writes the crate to `<dir>/<name>/`.
pub fn new_transform(options: &NewTransform) -> Result<Generated, ScaffoldError> {
    let spec = plan(options)?;
    check_sdk(&options.sdk_dir)?;
    let crate_dir = options.dir.join(&options.name);
    check_target(&crate_dir, options.force)?;
    let files: Vec<(PathBuf, Vec<u8>)> = spec
        .files(&options.sdk_dir)
        .into_iter()
        .map(|(path, text)| (path, text.into_bytes()))
        .collect();
    let written = write_files(&crate_dir, &files)?;
    Ok(Generated {
        crate_dir,
        written,
        snippet: spec.yaml_snippet(),
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(name: &str) -> NewTransform {
        NewTransform {
            name: name.into(),
            dir: PathBuf::from("transforms"),
            inputs: vec!["conv_rate:float32".into(), "trips: int64".into()],
            request: vec!["val:list<float64>".into()],
            outputs: vec![],
            sources: vec!["driver_stats".into()],
            sdk_dir: super::super::sdk_dir(None),
            force: false,
        }
    }

    #[test]
    fn fields_are_parsed_with_the_configuration_dtypes() {
        let spec = plan(&options("score")).unwrap();
        assert_eq!(spec.inputs[1].name, "trips");
        assert_eq!(spec.inputs[1].dtype, "int64");
        assert_eq!(spec.request_fields[0].dtype, "list<float64>");
        assert_eq!(spec.outputs[0].name, "value");
    }

    #[test]
    fn bad_names_and_dtypes_are_refused_naming_the_problem() {
        let err = |o: NewTransform| plan(&o).unwrap_err().to_string();
        let e = err(options("9lives"));
        assert!(e.contains("invalid transform name \"9lives\""), "{e}");
        let e = err(options("my-score"));
        assert!(e.contains("use '_' (my_score)"), "{e}");
        let e = err(options("type"));
        assert!(e.contains("Rust keyword"), "{e}");
        let mut o = options("score");
        o.outputs = vec!["x:float".into()];
        let e = err(o);
        assert!(
            e.contains("invalid field \"x:float\" in --outputs: unknown type \"float\""),
            "{e}"
        );
        let mut o = options("score");
        o.inputs = vec!["x".into()];
        let e = err(o);
        assert!(e.contains("expected name:dtype"), "{e}");
        let mut o = options("score");
        o.request = vec!["conv_rate:float64".into()];
        let e = err(o);
        assert!(e.contains("\"conv_rate\" is named twice"), "{e}");
        let mut o = options("score");
        o.sources = vec!["bad view".into()];
        let e = err(o);
        assert!(e.contains("invalid source view \"bad view\""), "{e}");
    }

    #[test]
    fn the_crate_is_written_once_and_refused_the_second_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options("score");
        o.dir = dir.path().join("transforms");
        let generated = new_transform(&o).unwrap();
        assert!(generated.crate_dir.join("src/lib.rs").is_file());
        assert!(generated.report().contains("transform: score"));
        let e = new_transform(&o).unwrap_err().to_string();
        assert!(e.contains("is not empty"), "{e}");
        o.force = true;
        let again = new_transform(&o).unwrap();
        assert!(again.written.iter().all(|w| w.replaced));
    }
}
