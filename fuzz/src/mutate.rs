//! A bounded, seeded mutation fuzzer for the test suite: the same targets libFuzzer runs, over
//! the seed corpus and a fixed number of mutants, so a CI run is repeatable and time-bounded.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Tokens spliced into inputs: JSON and YAML structure, edge numbers and strings.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-",
    b"0",
    b"1e309",
    b"-1e309",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"3.4028236e38",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\n",
    b"  - ",
    b": ",
    b"{a: ",
    b"&a ",
    b"*a",
    b"!!binary ",
    b"'",
    b"#",
    b"\xc1",
    b"\xff",
    b"\x92\xcf",
    b"\xdd\xff\xff\xff\xff",
];

/// Runs `target` on every seed, then on `cases` mutants of them. A panic fails the test and
/// prints the input that caused it.
pub fn run(target: fn(&[u8]), seeds: &[Vec<u8>], cases: usize, seed: u64) {
    assert!(!seeds.is_empty(), "a target needs at least one seed");
    let mut rng = StdRng::seed_from_u64(seed);
    let check = |input: &[u8]| {
        if let Err(panic) = std::panic::catch_unwind(|| target(input)) {
            eprintln!(
                "failing input ({} bytes): {:?}",
                input.len(),
                String::from_utf8_lossy(input)
            );
            std::panic::resume_unwind(panic);
        }
    };
    for s in seeds {
        check(s);
    }
    for _ in 0..cases {
        let mut input = seeds[rng.random_range(0..seeds.len())].clone();
        for _ in 0..rng.random_range(1..=4) {
            mutate_once(&mut input, seeds, &mut rng);
        }
        check(&input);
    }
}

fn mutate_once(input: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut StdRng) {
    let at = |rng: &mut StdRng, len: usize| rng.random_range(0..=len);
    match rng.random_range(0..7) {
        0 if !input.is_empty() => {
            let i = rng.random_range(0..input.len());
            input[i] ^= 1 << rng.random_range(0..8);
        }
        1 if !input.is_empty() => {
            let i = rng.random_range(0..input.len());
            input[i] = rng.random();
        }
        2 => {
            let i = at(rng, input.len());
            let token = TOKENS[rng.random_range(0..TOKENS.len())];
            input.splice(i..i, token.iter().copied());
        }
        3 if !input.is_empty() => {
            let start = rng.random_range(0..input.len());
            let end = (start + rng.random_range(1..=16)).min(input.len());
            input.drain(start..end);
        }
        4 if !input.is_empty() => {
            // Repeat a slice: grows nesting and lists.
            let start = rng.random_range(0..input.len());
            let end = (start + rng.random_range(1..=32)).min(input.len());
            let piece = input[start..end].repeat(rng.random_range(1..=8));
            let i = at(rng, input.len());
            input.splice(i..i, piece);
        }
        5 => {
            // Splice in part of another seed.
            let other = &seeds[rng.random_range(0..seeds.len())];
            if !other.is_empty() {
                let start = rng.random_range(0..other.len());
                let end = (start + rng.random_range(1..=64)).min(other.len());
                let i = at(rng, input.len());
                input.splice(i..i, other[start..end].iter().copied());
            }
        }
        _ => {
            let keep = at(rng, input.len());
            input.truncate(keep);
        }
    }
}
