#!/usr/bin/env bash
# The whole test suite, as the README and CI run it. Needs no root; tests
# that need root or /dev/net/tun say why and skip themselves.
#
#   scripts/test.sh            # everything
#   SEED=123 scripts/test.sh   # also run the differential test from that seed
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (workspace) =="
cargo test --workspace --all-targets

echo "== doc tests =="
cargo test --workspace --doc

echo "== netstack without its trace events (the build loopbench measures) =="
cargo test -p netstack --no-default-features --test trace_events

echo "== loom models (eventpoll, netdev) =="
# loom rebuilds the crates with its model-checked primitives; a separate
# target directory keeps the ordinary build cache intact.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test -p eventpoll --release --test loom -- --test-threads=1
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test -p netdev --release --lib -- --test-threads=1

echo "== loopbench smoke run (checks that it runs, not how fast) =="
cargo run --release -p loopbench -- all --quick --json-dir target/loopbench --plot target/plots
