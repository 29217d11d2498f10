#!/usr/bin/env bash
# Runs every check the project has: formatting, lints, and all tests (unit, official vectors, end-to-end
# against the local two-region AWS environment). Prints the test count at the end.
#
# Needs: Rust (stable, >= 1.94) with cargo-nextest (falls back to `cargo test` without it), and
# Python 3 with the venv module for the local AWS environment (installed on first use into .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ddbguard/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

step() { printf '\n==> %s\n' "$*"; }

step "local AWS environment (moto 5.2.5 in .venv)"
scripts/local-aws install

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast --failure-output final
else
  echo "(cargo-nextest not found: using cargo test)"
  cargo test --workspace --locked --no-fail-fast
fi

step "doc tests"
cargo test --workspace --locked --doc
