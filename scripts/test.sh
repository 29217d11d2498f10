#!/usr/bin/env bash
# Runs every check the project has: formatting, lints, dependency policy (cargo-deny: licences, banned
# crates, sources, advisories), unused dependencies (cargo-machete), and all tests (unit, official vectors,
# end-to-end against the local two-region AWS environment). Prints the test count at the end.
#
# Needs: Rust (stable, >= 1.94) with cargo-nextest (falls back to `cargo test` without it), and
# Python 3 with the venv module for the local AWS environment (installed on first use into .venv).
# cargo-deny and cargo-machete are installed from crates.io at the pinned versions below when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ddbguard/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

step() { printf '\n==> %s\n' "$*"; }

CARGO_DENY_VERSION=0.20.2
CARGO_MACHETE_VERSION=0.9.1

# Installs a cargo subcommand at the pinned version unless that version is already on PATH.
ensure_tool() {
  local crate=$1 version=$2
  if ! "$crate" --version 2>/dev/null | grep -qE "(^| )${version//./\\.}$"; then
    cargo install --locked --quiet "$crate@$version"
  fi
}

step "local AWS environment (moto 5.2.5 in .venv)"
scripts/local-aws install

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
# ddbguard-keys without its default `aws` feature (what the fuzz targets build): a feature nothing builds rots.
cargo clippy -p ddbguard-keys --lib --no-default-features --locked -- -D warnings

step "cargo deny check (deny.toml)"
ensure_tool cargo-deny "$CARGO_DENY_VERSION"
# The advisory database is cloned from GitHub; where only crates.io is reachable the fetch fails, and the
# other three checks still run (see deny.toml).
if cargo deny fetch db >/dev/null 2>&1; then
  cargo deny --locked check
else
  echo "(advisory database unreachable: checking licenses, bans and sources only)"
  cargo deny --locked check licenses bans sources
fi

step "cargo machete (unused dependencies)"
ensure_tool cargo-machete "$CARGO_MACHETE_VERSION"
cargo machete

step "tests"
# The stream reader's model test (crates/stream/src/sim.rs) runs a fixed number of generated schedules from this
# seed; a failure prints the seed and a shrunk schedule. scripts/soak.sh runs many more.
export DDBGUARD_MODEL_SEED="${DDBGUARD_MODEL_SEED:-$(date +%s%N)}"
echo "model test seed: DDBGUARD_MODEL_SEED=$DDBGUARD_MODEL_SEED"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast --failure-output final
else
  echo "(cargo-nextest not found: using cargo test)"
  cargo test --workspace --locked --no-fail-fast
fi

step "doc tests"
cargo test --workspace --locked --doc
