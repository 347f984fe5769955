//! The one generator of transform crates: a standalone crate (a `[workspace]` of its own, the SDK
//! by path) with typed `Input` and `Output` structs, the `#[transform]` function and a unit test.
//! `quiver init`, `quiver new-transform` and `quiver import-feast`'s stubs all write through it.

use std::fmt::Write;
use std::path::{Path, PathBuf};

/// A field of a transform's input or output: a name and a Quiver dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Name, as in `feature_store.yaml`.
    pub name: String,
    /// Quiver dtype: `float64`, `list<int64>`, ...
    pub dtype: String,
}

/// What a transform crate holds; [`TransformCrate::files`] renders it.
#[derive(Debug, Clone)]
pub struct TransformCrate {
    /// The on-demand view the transform computes (also the package name).
    pub view: String,
    /// The view's `transform`: the library, the function and the `.wasm` file name.
    pub transform: String,
    /// The source feature views, for the doc comment of `Input`.
    pub sources: Vec<String>,
    /// Features of the source views the transform reads (each `Option<T>`).
    pub inputs: Vec<Field>,
    /// Request fields the client sends (plain `T`).
    pub request_fields: Vec<Field>,
    /// The view's schema (each `Option<T>`).
    pub outputs: Vec<Field>,
    /// What wrote the crate, for the file headers: "`quiver init`".
    pub generated_by: String,
    /// More lines of the crate's doc comment (no `//!`), or empty.
    pub about: String,
    /// The function's body (indented four spaces, `row` is the input), or `None` for the
    /// placeholder: every output `None`, clearly marked.
    pub body: Option<String>,
    /// The unit tests (items inside `mod tests`, after `use super::*;`), or `None` for a test
    /// pinning the placeholder.
    pub tests: Option<String>,
    /// Text kept as a comment at the end of `src/lib.rs` (a function to port), or empty.
    pub trailer: String,
}

/// Words a field cannot be named as, even raw (`r#self` is not allowed).
const NOT_RAW: &[&str] = &["self", "Self", "super", "crate", "_"];

/// Rust keywords, written raw (`r#type`) as field and function names.
pub const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false",
    "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where",
    "while", "abstract", "become", "box", "do", "final", "macro", "override", "priv", "try",
    "typeof", "unsized", "virtual", "yield",
];

/// A Rust identifier for `name`, and whether it reads differently from `name` (so serde needs a
/// `rename`).
pub fn rust_ident(name: &str) -> (String, bool) {
    let mut ident: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if ident.is_empty() || ident.starts_with(|c: char| c.is_ascii_digit()) {
        ident.insert(0, '_');
    }
    if NOT_RAW.contains(&ident.as_str()) {
        ident.push('_');
    } else if KEYWORDS.contains(&ident.as_str()) {
        return (format!("r#{ident}"), ident != name);
    }
    let renamed = ident != name;
    (ident, renamed)
}

/// The Rust type of a Quiver dtype (`list<float64>` → `Vec<f64>`), and whether it needs
/// `serde_bytes`.
pub fn rust_type(dtype: &str) -> (String, bool) {
    if let Some(inner) = dtype
        .strip_prefix("list<")
        .and_then(|rest| rest.strip_suffix('>'))
    {
        let (t, bytes) = rust_type(inner);
        return (format!("Vec<{t}>"), bytes);
    }
    let t = match dtype {
        "int32" => "i32",
        "int64" | "unix_timestamp" => "i64",
        "float32" => "f32",
        "float64" => "f64",
        "bool" => "bool",
        "string" => "String",
        "bytes" => return ("serde_bytes::ByteBuf".into(), true),
        _ => "String",
    };
    (t.into(), false)
}

impl TransformCrate {
    /// The crate's files: `(path relative to the crate directory, contents)`. `sdk_dir` is the
    /// `quiver-sdk` crate the transform depends on by path.
    pub fn files(&self, sdk_dir: &Path) -> Vec<(PathBuf, String)> {
        vec![
            (PathBuf::from("Cargo.toml"), self.cargo_toml(sdk_dir)),
            (PathBuf::from("src/lib.rs"), self.lib_rs()),
            (
                PathBuf::from(".gitignore"),
                "# Build output (cargo build, cargo test).\n/target/\n".into(),
            ),
        ]
    }

    /// The function's name in Rust.
    pub fn function(&self) -> String {
        rust_ident(&self.transform).0
    }

    fn needs_bytes(&self) -> bool {
        self.inputs
            .iter()
            .chain(&self.request_fields)
            .chain(&self.outputs)
            .any(|f| rust_type(&f.dtype).1)
    }

    fn cargo_toml(&self, sdk_dir: &Path) -> String {
        let sdk = serde_json::to_string(&sdk_dir.to_string_lossy()).unwrap_or_default();
        let mut out = format!(
            r#"# The transform of the on-demand view `{view}`, generated by {by}.
# Build the module Quiver loads with
#   cargo build --release --target wasm32-unknown-unknown
# and copy target/wasm32-unknown-unknown/release/{lib}.wasm into the registry's transforms.dir.
[package]
name = "{view}"
version = "0.1.0"
edition = "2024"

[lib]
name = "{lib}"
# cdylib: the .wasm module; rlib: native unit tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
quiver-sdk = {{ path = {sdk} }}
# serde's derives refer to the `serde` crate by name, so depend on it too.
serde = {{ version = "1", features = ["derive"] }}
"#,
            view = self.view,
            by = self.generated_by,
            lib = self.transform,
        );
        if self.needs_bytes() {
            out.push_str("# `bytes` fields.\nserde_bytes = \"0.11\"\n");
        }
        out.push_str(
            r#"
# A workspace of its own: the crate builds where it is, inside another workspace or not.
[workspace]

# Small modules; a panic ends the call with an error either way.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#,
        );
        out
    }

    fn lib_rs(&self) -> String {
        let function = self.function();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "//! The transform of the on-demand view `{}`, generated by {}.",
            self.view, self.generated_by
        );
        for line in self.about.lines() {
            let _ = writeln!(out, "//! {line}");
        }
        if self.body.is_none() {
            let _ = writeln!(
                out,
                "//!\n//! PLACEHOLDER: every output is `None` (served as null) until the body of `{function}`\n\
                 //! below computes it."
            );
        }
        let _ = writeln!(
            out,
            "\nuse quiver_sdk::{{Deserialize, Serialize, transform}};\n"
        );
        let sources = if self.sources.is_empty() {
            "no view".to_string()
        } else {
            self.sources
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "/// One input row: the features of {sources} (absent values are `None`), then the request\n\
             /// fields the client sends. Features the struct does not name are ignored.\n\
             #[derive(Debug, Clone, Default, Deserialize)]\npub struct Input {{"
        );
        struct_fields(&mut out, &self.inputs, true, "feature");
        struct_fields(&mut out, &self.request_fields, false, "request field");
        let _ = writeln!(out, "}}\n");
        let _ = writeln!(
            out,
            "/// One output row: the view's schema, field for field (`None` is served as null).\n\
             #[derive(Debug, Clone, PartialEq, Serialize)]\npub struct Output {{"
        );
        struct_fields(&mut out, &self.outputs, true, "output");
        let _ = writeln!(out, "}}\n");
        let _ = writeln!(
            out,
            "/// Computes `{}` for one row.\n#[transform]\npub fn {function}(row: Input) -> Output {{",
            self.view
        );
        match &self.body {
            Some(body) => {
                out.push_str(body.trim_end());
                out.push('\n');
            }
            None => {
                let _ = writeln!(
                    out,
                    "    // PLACEHOLDER: compute the outputs from `row`. Until then every output is null.\n    \
                     let _ = row;\n    {}",
                    self.null_output()
                );
            }
        }
        let _ = writeln!(out, "}}\n\n#[cfg(test)]\nmod tests {{\n    use super::*;\n");
        match &self.tests {
            Some(tests) => {
                out.push_str(tests.trim_end());
                out.push('\n');
            }
            None => {
                let _ = writeln!(
                    out,
                    "    // Replace this test with cases of the real computation once it is written.\n    \
                     #[test]\n    fn the_placeholder_answers_null_for_every_output() {{\n        \
                     assert_eq!(\n            {function}(Input::default()),\n            {}\n        );\n    }}",
                    self.null_output()
                );
            }
        }
        let _ = writeln!(out, "}}");
        if !self.trailer.is_empty() {
            out.push('\n');
            for line in self.trailer.lines() {
                let _ = writeln!(out, "// {line}");
            }
        }
        // Trailing spaces of empty comment lines.
        out.lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    /// `Output { a: None, b: None }`.
    fn null_output(&self) -> String {
        let fields: Vec<String> = self
            .outputs
            .iter()
            .map(|f| format!("{}: None", rust_ident(&f.name).0))
            .collect();
        if fields.is_empty() {
            "Output {}".into()
        } else {
            format!("Output {{ {} }}", fields.join(", "))
        }
    }

    /// The view's `on_demand_feature_views` entry, under its key, as YAML to paste into
    /// `feature_store.yaml`.
    pub fn yaml_snippet(&self) -> String {
        let mut out = format!(
            "on_demand_feature_views:\n  - name: {}\n    transform: {}          # {}.wasm in transforms.dir\n",
            self.view, self.transform, self.transform
        );
        let _ = writeln!(out, "    sources: [{}]", self.sources.join(", "));
        let list = |out: &mut String, key: &str, fields: &[Field]| {
            if fields.is_empty() {
                return;
            }
            let _ = writeln!(out, "    {key}:");
            for f in fields {
                let _ = writeln!(out, "      - {{ name: {}, dtype: {} }}", f.name, f.dtype);
            }
        };
        list(&mut out, "request_fields", &self.request_fields);
        list(&mut out, "schema", &self.outputs);
        out
    }
}

fn struct_fields(out: &mut String, fields: &[Field], optional: bool, what: &str) {
    for f in fields {
        let (ident, renamed) = rust_ident(&f.name);
        let (ty, _) = rust_type(&f.dtype);
        let _ = writeln!(out, "    /// `{}` ({}, {what}).", f.name, f.dtype);
        if renamed {
            let _ = writeln!(out, "    #[serde(rename = {:?})]", f.name);
        }
        if optional {
            let _ = writeln!(out, "    pub {ident}: Option<{ty}>,");
        } else {
            let _ = writeln!(out, "    pub {ident}: {ty},");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, dtype: &str) -> Field {
        Field {
            name: name.into(),
            dtype: dtype.into(),
        }
    }

    fn sample(body: Option<String>) -> TransformCrate {
        TransformCrate {
            view: "trip".into(),
            transform: "trip".into(),
            sources: vec!["driver_stats".into()],
            inputs: vec![field("conv_rate", "float32"), field("tags", "list<bytes>")],
            request_fields: vec![field("type", "int64")],
            outputs: vec![field("score-1", "float64")],
            generated_by: "`quiver new-transform`".into(),
            about: String::new(),
            body,
            tests: None,
            trailer: String::new(),
        }
    }

    #[test]
    fn names_that_are_not_rust_identifiers_are_renamed_for_serde() {
        assert_eq!(rust_ident("conv_rate"), ("conv_rate".into(), false));
        assert_eq!(rust_ident("type"), ("r#type".into(), false));
        assert_eq!(rust_ident("trip-estimate"), ("trip_estimate".into(), true));
        assert_eq!(rust_ident("7d_sum"), ("_7d_sum".into(), true));
        assert_eq!(rust_ident("self"), ("self_".into(), true));
    }

    #[test]
    fn dtypes_map_to_the_sdk_rust_types() {
        assert_eq!(rust_type("float32").0, "f32");
        assert_eq!(rust_type("list<float64>").0, "Vec<f64>");
        assert_eq!(rust_type("unix_timestamp").0, "i64");
        assert_eq!(
            rust_type("list<bytes>"),
            ("Vec<serde_bytes::ByteBuf>".into(), true)
        );
    }

    #[test]
    fn the_crate_is_standalone_with_typed_fields_and_a_placeholder_test() {
        let files = sample(None).files(Path::new("/checkout/sdk"));
        let manifest = &files[0].1;
        assert!(
            manifest.contains("quiver-sdk = { path = \"/checkout/sdk\" }"),
            "{manifest}"
        );
        assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
        assert!(manifest.contains("serde_bytes"), "{manifest}");
        let lib = &files[1].1;
        assert!(lib.contains("pub conv_rate: Option<f32>,"), "{lib}");
        assert!(
            lib.contains("pub tags: Option<Vec<serde_bytes::ByteBuf>>,"),
            "{lib}"
        );
        assert!(lib.contains("pub r#type: i64,"), "{lib}");
        assert!(
            lib.contains("#[serde(rename = \"score-1\")]\n    pub score_1: Option<f64>,"),
            "{lib}"
        );
        assert!(lib.contains("PLACEHOLDER"), "{lib}");
        assert!(
            lib.contains("fn the_placeholder_answers_null_for_every_output()"),
            "{lib}"
        );
        assert!(
            lib.contains("trip(Input::default()),\n            Output { score_1: None }"),
            "{lib}"
        );
    }

    #[test]
    fn a_given_body_replaces_the_placeholder() {
        let files =
            sample(Some("    Output { score_1: Some(1.0) }".into())).files(Path::new("/sdk"));
        let lib = &files[1].1;
        assert!(!lib.contains("PLACEHOLDER"), "{lib}");
        assert!(
            lib.contains("    Output { score_1: Some(1.0) }\n}"),
            "{lib}"
        );
    }

    #[test]
    fn the_snippet_lists_sources_request_fields_and_schema() {
        assert_eq!(
            sample(None).yaml_snippet(),
            "on_demand_feature_views:\n  - name: trip\n    transform: trip          # trip.wasm in transforms.dir\n    \
             sources: [driver_stats]\n    request_fields:\n      - { name: type, dtype: int64 }\n    \
             schema:\n      - { name: score-1, dtype: float64 }\n"
        );
    }
}
