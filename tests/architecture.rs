//! The layering rules of docs/architecture.md, checked on the source: nothing below `serving`
//! imports from it, the registry and the stores never import the YAML layer, the stores know
//! nothing of the registry, monitoring knows only values, and the services that write files
//! (`import`, `scaffold`) stay below the domain layer.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Lines of `module` (a file or directory under runtime/src) that import `forbidden`, ignoring
/// comments.
fn imports(module: &str, forbidden: &str) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/src");
    let root = src.join(module);
    let files = if root.is_dir() {
        sources(&root)
    } else {
        vec![root.with_extension("rs")]
    };
    let needle = format!("crate::{forbidden}");
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains(&needle) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn nothing_below_serving_imports_from_serving() {
    for module in [
        "online",
        "offline",
        "registry",
        "store",
        "cache",
        "metered",
        "metrics",
        "monitoring",
        "transform",
        "config",
        "import",
        "scaffold",
        "settings",
        "types",
        "entity_key",
        "clock",
    ] {
        assert_eq!(imports(module, "serving"), Vec::<String>::new(), "{module}");
    }
}

#[test]
fn the_registry_settings_and_stores_never_import_the_yaml_layer() {
    for module in ["registry", "settings", "store"] {
        assert_eq!(imports(module, "config"), Vec::<String>::new(), "{module}");
    }
}

#[test]
fn the_import_and_scaffold_services_never_import_the_domain_layer() {
    for module in ["import", "scaffold"] {
        for domain in ["online", "offline"] {
            assert_eq!(imports(module, domain), Vec::<String>::new(), "{module}");
        }
    }
}

#[test]
fn the_stores_know_nothing_of_the_registry() {
    assert_eq!(imports("store", "registry"), Vec::<String>::new());
}

#[test]
fn monitoring_imports_only_the_value_types() {
    for layer in [
        "offline",
        "online",
        "registry",
        "config",
        "store",
        "settings",
        "transform",
        "cache",
        "metered",
        "metrics",
        "import",
        "serving",
    ] {
        assert_eq!(
            imports("monitoring", layer),
            Vec::<String>::new(),
            "{layer}"
        );
    }
}
