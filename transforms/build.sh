#!/usr/bin/env bash
# Builds every transform crate to WebAssembly and installs the modules into transforms/wasm/,
# the directory Quiver watches: `transforms/build.sh` from anywhere in the repository.
#
# Needs the wasm32 target once: `rustup target add wasm32-unknown-unknown`.
# Each module is copied to a temporary name and renamed into place, so a running server that
# watches the directory never sees a half-written file.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Every crate directly under transforms/ is a transform.
crates=()
for manifest in "$root"/transforms/*/Cargo.toml; do
    crates+=("$(basename "$(dirname "$manifest")")")
done
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out_dir="$root/transforms/wasm"

packages=()
for crate in "${crates[@]}"; do packages+=(-p "$crate"); done

cd "$root"
cargo build --profile wasm-release --target wasm32-unknown-unknown "${packages[@]}"

mkdir -p "$out_dir"
for crate in "${crates[@]}"; do
    built="$target_dir/wasm32-unknown-unknown/wasm-release/$crate.wasm"
    tmp="$out_dir/.$crate.wasm.tmp"
    cp "$built" "$tmp"
    mv -f "$tmp" "$out_dir/$crate.wasm"
    echo "installed $out_dir/$crate.wasm ($(wc -c <"$out_dir/$crate.wasm") bytes)"
done
