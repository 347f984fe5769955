//! The reference docs cannot drift from the code: every field of `feature_store.yaml` that serde
//! accepts is in `docs/configuration.md` and every documented field is accepted, and every route
//! of the router is in `docs/http-api.md` and in `openapi.json`, and nothing else is.
//!
//! The fields a section accepts come from serde itself: a document setting an unknown field is
//! rejected (`deny_unknown_fields`) with the list of the fields it expected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn read_doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The backticked names after "expected" in serde's unknown-field message.
fn expected_fields(message: &str) -> BTreeSet<String> {
    let list = message
        .split_once("expected")
        .unwrap_or_else(|| panic!("not an unknown-field message: {message}"))
        .1;
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The fields of the section that `document` (YAML with `__undocumented__` set in it) puts the
/// unknown field in, from the error the configuration loader reports.
fn accepted_fields(document: &str) -> BTreeSet<String> {
    let errors = match quiver::config::load_str(document, Path::new("/base")) {
        Ok(_) => panic!("accepted an unknown field:\n{document}"),
        Err(e) => e.errors,
    };
    let error = errors
        .iter()
        .find(|e| e.message.contains("__undocumented__"))
        .unwrap_or_else(|| panic!("no unknown-field error for:\n{document}\n{errors:?}"));
    expected_fields(&error.message)
}

/// Every table of the document, by the `## ` heading above it (headings without backticks), each
/// as the list of its first cells (backticks removed, and `type: sqlite` read as `type`).
fn documented_tables(doc: &str) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut tables: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let mut heading = String::new();
    let mut in_table = false;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            heading = h.replace('`', "");
            in_table = false;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table {
            in_table = true;
            tables.entry(heading.clone()).or_default().push(Vec::new());
            continue; // the header row
        }
        let cell = line.split('|').nth(1).unwrap_or_default().trim();
        if cell.starts_with("---") || !cell.starts_with('`') {
            continue;
        }
        let name = cell.replace('`', "");
        let name = name
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let table = tables.get_mut(&heading).unwrap().last_mut().unwrap();
        table.push(name);
    }
    tables
}

fn set(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

#[test]
fn configuration_md_documents_exactly_the_fields_the_config_accepts() {
    let tables = documented_tables(&read_doc("configuration.md"));
    let table = |heading: &str| -> &Vec<String> {
        let found = tables
            .get(heading)
            .unwrap_or_else(|| panic!("no \"## {heading}\" table in docs/configuration.md"));
        assert_eq!(found.len(), 1, "one table under \"## {heading}\"");
        &found[0]
    };
    let mut mismatches = Vec::new();
    let mut missing_tables = Vec::new();
    let mut compare = |section: &str, documented: BTreeSet<String>, accepted: BTreeSet<String>| {
        if documented != accepted {
            mismatches.push(format!(
                "{section}: documented but not accepted {:?}; accepted but not documented {:?}",
                documented.difference(&accepted).collect::<Vec<_>>(),
                accepted.difference(&documented).collect::<Vec<_>>(),
            ));
        }
    };

    // The top level, straight from the document type.
    let top = serde_json::from_str::<quiver::config::RawConfig>(r#"{"__undocumented__": 0}"#)
        .expect_err("unknown field rejected")
        .to_string();
    compare("top level", set(table("Top level")), expected_fields(&top));

    // Each online-store backend has its own table: the one with its `type: <name>` row.
    let doc = read_doc("configuration.md");
    for backend in quiver::store::BACKENDS {
        let type_row = format!("| `type: {}` |", backend.name);
        let Some(start) = doc.find(&type_row) else {
            missing_tables.push(format!(
                "online_store: no table with a {type_row} row for the {} backend",
                backend.name
            ));
            continue;
        };
        let documented: BTreeSet<String> = doc[start..]
            .lines()
            .take_while(|l| l.starts_with('|'))
            .skip(1)
            .filter_map(|l| l.split('|').nth(1))
            .map(|c| c.trim().replace('`', ""))
            .collect();
        let accepted = accepted_fields(&format!(
            "project: p\nonline_store:\n  type: {}\n  __undocumented__: 1\n",
            backend.name
        ));
        compare(
            &format!("online_store (type: {})", backend.name),
            documented,
            accepted,
        );
    }

    let item = |list: &str, fields: &str| {
        format!("project: p\n{list}:\n  - {{{fields}__undocumented__: 1}}\n")
    };
    compare(
        "entities[]",
        set(table("entities[]")),
        accepted_fields(&item("entities", "")),
    );
    let views = table("feature_views[]");
    let (source, view): (Vec<String>, Vec<String>) = views
        .iter()
        .cloned()
        .partition(|f| f.starts_with("source."));
    let mut view = set(&view);
    view.insert("source".into());
    compare(
        "feature_views[]",
        view,
        accepted_fields(&item("feature_views", "")),
    );
    compare(
        "feature_views[].source",
        source
            .iter()
            .map(|f| f.trim_start_matches("source.").to_string())
            .collect(),
        accepted_fields(&item(
            "feature_views",
            "name: v, entities: [], schema: [], source: {path: x, __undocumented__: 1}, ",
        )),
    );
    for list in [
        "on_demand_feature_views",
        "feature_services",
        "push_sources",
    ] {
        compare(
            &format!("{list}[]"),
            set(table(&format!("{list}[]"))),
            accepted_fields(&item(list, "")),
        );
    }
    compare(
        "feature_services[].logging",
        set(table("feature_services[].logging")),
        accepted_fields(&item(
            "feature_services",
            "name: s, features: [], logging: {destination: x, __undocumented__: 1}, ",
        )),
    );
    compare(
        "monitoring.references[]",
        set(table("monitoring.references[]")),
        accepted_fields(
            "project: p\nmonitoring:\n  references:\n    - {profile: x, __undocumented__: 1}\n",
        ),
    );
    let (s3, offline): (Vec<String>, Vec<String>) = table("offline_store")
        .iter()
        .cloned()
        .partition(|f| f.starts_with("s3."));
    let mut offline = set(&offline);
    offline.insert("s3".into());
    compare(
        "offline_store",
        offline,
        accepted_fields("project: p\noffline_store:\n  __undocumented__: 1\n"),
    );
    compare(
        "offline_store.s3",
        s3.iter()
            .map(|f| f.trim_start_matches("s3.").to_string())
            .collect(),
        accepted_fields("project: p\noffline_store:\n  s3:\n    __undocumented__: 1\n"),
    );
    for section in ["push", "server", "cache", "transforms", "monitoring"] {
        compare(
            section,
            set(table(section)),
            accepted_fields(&format!("project: p\n{section}:\n  __undocumented__: 1\n")),
        );
    }
    mismatches.extend(missing_tables);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// The `METHOD /path` rows of the endpoint table of `docs/http-api.md`.
fn documented_routes() -> BTreeSet<(String, String)> {
    let doc = read_doc("http-api.md");
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(route, _)| route))
        .filter_map(|route| route.split_once(' '))
        .filter(|(method, path)| {
            matches!(*method, "GET" | "POST" | "PUT" | "DELETE") && path.starts_with('/')
        })
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect()
}

#[test]
fn http_api_md_and_openapi_json_list_exactly_the_routes_of_the_router() {
    let router: BTreeSet<(String, String)> = quiver::serving::route_paths()
        .into_iter()
        .map(|(path, method)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(
        documented_routes(),
        router,
        "docs/http-api.md vs the router"
    );

    let openapi: serde_json::Value = serde_json::from_str(quiver::serving::openapi::BASE).unwrap();
    let mut in_openapi = BTreeSet::new();
    for (path, operations) in openapi["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            in_openapi.insert((method.to_uppercase(), path.clone()));
        }
    }
    assert_eq!(in_openapi, router, "openapi.json vs the router");
}

#[test]
fn http_api_md_documents_every_error_code_the_server_answers_with() {
    let doc = read_doc("http-api.md");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/src/serving");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Codes are SCREAMING_SNAKE string literals: "STORE_ERROR", or inside raw JSON text.
        for piece in text.split('"') {
            let code = piece.trim_matches(|c| c == '\\' || c == '{' || c == '}');
            let is_code = code.len() > 3
                && code.contains('_')
                && code.chars().all(|c| c.is_ascii_uppercase() || c == '_');
            if is_code && !doc.contains(&format!("| `{code}` |")) {
                missing.push(format!("{code} ({})", path.display()));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "error codes missing from the table in docs/http-api.md: {missing:?}"
    );
}
