//! The Quiver `feature_store.yaml` text of a [`Conversion`], with the notes as comments on top.

use std::fmt::Write;

use super::convert::{Conversion, Field, Note, OnDemandView, PushSource};

/// A YAML scalar: plain when it is a simple word that YAML reads as a string, JSON-quoted (a
/// valid YAML double-quoted string) otherwise.
pub fn scalar(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '/' || c == '.')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./<>".contains(c))
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        text.to_string()
    } else {
        serde_json::to_string(text).unwrap_or_default()
    }
}

/// `view` or `view:feature`, plain when both parts are.
fn reference(text: &str) -> String {
    if text.split(':').all(|part| scalar(part) == part) {
        text.to_string()
    } else {
        scalar(text)
    }
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| scalar(i)).collect();
    format!("[{}]", items.join(", "))
}

fn fields(out: &mut String, indent: &str, key: &str, fields: &[Field]) {
    let _ = writeln!(out, "{indent}{key}:");
    for f in fields {
        let _ = writeln!(
            out,
            "{indent}  - {{ name: {}, dtype: {} }}",
            scalar(&f.name),
            scalar(&f.dtype)
        );
    }
}

fn comment_line(out: &mut String, indent: &str, text: &Option<String>) {
    if let Some(text) = text {
        let _ = writeln!(out, "{indent}# {text}");
    }
}

fn description(out: &mut String, indent: &str, text: &str) {
    if !text.is_empty() {
        let _ = writeln!(out, "{indent}description: {}", scalar(text));
    }
}

/// The notes as a list, one `- subject: message` per line (wrapped at nothing: one note, one
/// line, so they can be searched).
pub fn notes_list(notes: &[Note]) -> Vec<String> {
    notes
        .iter()
        .map(|n| format!("- {}: {}", n.subject, n.message))
        .collect()
}

/// The on-demand view's entry as it would be written, uncommented.
pub fn on_demand_entry(v: &OnDemandView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "  - name: {}", scalar(&v.name));
    let _ = writeln!(out, "    transform: {}", scalar(&v.transform));
    let _ = writeln!(out, "    sources: {}", list(&v.sources));
    if !v.request_fields.is_empty() {
        fields(&mut out, "    ", "request_fields", &v.request_fields);
    }
    fields(&mut out, "    ", "schema", &v.schema);
    description(&mut out, "    ", &v.description);
    out
}

fn push_entry(p: &PushSource) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "  - name: {}", scalar(&p.name));
    let _ = writeln!(out, "    feature_view: {}", scalar(&p.feature_view));
    description(&mut out, "    ", &p.description);
    out
}

/// The whole document. `origin` names the Feast repository in the header.
pub fn render(c: &Conversion, origin: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported from the Feast repository {origin} by `quiver import-feast`."
    );
    if c.notes.is_empty() {
        let _ = writeln!(out, "# Everything was carried over.");
    } else {
        let _ = writeln!(out, "#\n# Not carried over ({}):", c.notes.len());
        for line in notes_list(&c.notes) {
            let _ = writeln!(out, "#   {line}");
        }
    }
    let _ = writeln!(out, "\nproject: {}", scalar(&c.project));

    let _ = writeln!(out, "\nonline_store:");
    for (k, v) in &c.online_store {
        // Numbers (key_ttl_seconds) stay numbers.
        let v = if v.parse::<u64>().is_ok() {
            v.clone()
        } else {
            scalar(v)
        };
        let _ = writeln!(out, "  {k}: {v}");
    }

    if !c.entities.is_empty() {
        let _ = writeln!(out, "\nentities:");
        for e in &c.entities {
            comment_line(&mut out, "  ", &e.comment);
            let _ = writeln!(out, "  - name: {}", scalar(&e.name));
            let _ = writeln!(
                out,
                "    join_keys: {}",
                list(std::slice::from_ref(&e.join_key))
            );
            let _ = writeln!(out, "    value_type: {}", e.value_type);
            description(&mut out, "    ", &e.description);
        }
    }

    if !c.feature_views.is_empty() {
        let _ = writeln!(out, "\nfeature_views:");
        for v in &c.feature_views {
            comment_line(&mut out, "  ", &v.comment);
            let _ = writeln!(out, "  - name: {}", scalar(&v.name));
            let _ = writeln!(out, "    entities: {}", list(&v.entities));
            if let Some(ttl) = &v.ttl {
                let _ = writeln!(out, "    ttl: {ttl}");
            }
            if !v.online {
                let _ = writeln!(out, "    online: false");
            }
            fields(&mut out, "    ", "schema", &v.schema);
            let _ = writeln!(out, "    source:");
            let _ = writeln!(out, "      path: {}", scalar(&v.path));
            let _ = writeln!(out, "      timestamp_field: {}", scalar(&v.timestamp_field));
            if let Some(created) = &v.created_timestamp_column {
                let _ = writeln!(out, "      created_timestamp_column: {}", scalar(created));
            }
            description(&mut out, "    ", &v.description);
        }
    }

    if !c.on_demand_views.is_empty() {
        let _ = writeln!(
            out,
            "\n# On-demand views whose Feast transformation is Python. Each has a stub transform crate\n\
             # in transforms/<transform>/ whose outputs are all null until its function is ported.\n\
             # Port it, build it (cargo build --release --target wasm32-unknown-unknown), copy the\n\
             # .wasm into transforms/wasm/, then uncomment the entry (and the section key)."
        );
        let _ = writeln!(out, "# on_demand_feature_views:");
        for v in &c.on_demand_views {
            for line in on_demand_entry(v).lines() {
                let _ = writeln!(out, "# {line}");
            }
            for (service, reference) in &v.service_refs {
                let _ = writeln!(
                    out,
                    "#   # then add {reference} back to feature service {service}"
                );
            }
        }
    }

    if !c.feature_services.is_empty() {
        let _ = writeln!(out, "\nfeature_services:");
        for s in &c.feature_services {
            comment_line(&mut out, "  ", &s.comment);
            let _ = writeln!(out, "  - name: {}", scalar(&s.name));
            if s.features.is_empty() {
                let _ = writeln!(out, "    features: []");
            } else {
                let _ = writeln!(out, "    features:");
                for f in &s.features {
                    let _ = writeln!(out, "      - {}", reference(f));
                }
            }
            description(&mut out, "    ", &s.description);
        }
    }

    if !c.push_sources.is_empty() {
        let _ = writeln!(out, "\npush_sources:");
    }
    for p in &c.push_sources {
        out.push_str(&push_entry(p));
    }
    out
}
