//! Every fuzz target over its seed corpus and a fixed number of seeded mutants: what CI runs on
//! each change. Coverage-guided runs use cargo-fuzz (fuzz/README.md).

use std::path::Path;

const CASES: usize = 20_000;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn lookup_requests_never_panic_or_answer_a_server_error() {
    quiver_fuzz::mutate::run(
        quiver_fuzz::lookup_request,
        &seeds("lookup_request"),
        CASES,
        1,
    );
}

#[test]
fn push_requests_never_panic_or_answer_a_server_error() {
    quiver_fuzz::mutate::run(quiver_fuzz::push_request, &seeds("push_request"), CASES, 2);
}

#[test]
fn configs_never_panic() {
    quiver_fuzz::mutate::run(quiver_fuzz::config, &seeds("config"), CASES / 4, 3);
}

#[test]
fn records_that_decode_round_trip() {
    quiver_fuzz::mutate::run(quiver_fuzz::record_codec, &seeds("record_codec"), CASES, 4);
}
