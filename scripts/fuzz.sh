#!/usr/bin/env bash
# Fuzzes route and owner parsing for a bounded time (default 60 s):  scripts/fuzz.sh [SECONDS]
# cargo-fuzz drives libFuzzer; it needs nightly flags, which RUSTC_BOOTSTRAP=1 allows on the
# installed stable toolchain (no other toolchain can be fetched here).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
mkdir -p fuzz/corpus/route
RUSTC_BOOTSTRAP=1 cargo fuzz run route fuzz/corpus/route -- -max_total_time="$seconds"
