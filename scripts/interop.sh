#!/usr/bin/env bash
# Interoperability of ddbguard's item format with the official AWS Database Encryption SDK crate
# (aws-db-esdk 1.3.0, a dev-dependency of the separate interop/ crate):
#
#   scripts/interop.sh          items written by either side decrypt on the other; edge cases are
#                               accepted or rejected alike; tampered items fail on both sides.
#   scripts/interop.sh --bench  decrypt-and-verify µs/item, ddbguard vs the official crate, both
#                               suites, side by side (release build), plus the bench's peak RSS.
#
# The first build of the official crate takes several minutes (longer in release); later runs reuse
# CARGO_TARGET_DIR_INTEROP (default ~/.cache/ddbguard/target-interop).
# INTEROP_CASES sets the number of cases per property (default 64 round trips, 96 tampers).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_INTEROP:-$HOME/.cache/ddbguard/target-interop}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

step() { printf '\n==> %s\n' "$*"; }

bench=false
case "${1:-}" in
  "") ;;
  --bench) bench=true ;;
  -h | --help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [--bench]" >&2
    exit 2
    ;;
esac

cd interop

if $bench; then
  step "interop bench: decrypt-and-verify, ddbguard vs aws-db-esdk 1.3.0 (release)"
  export CRITERION_HOME="$CARGO_TARGET_DIR/criterion"
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  cargo bench --locked --bench decrypt 2>&1 | tee "$log"
  step "summary"
  # The bench prints the table after criterion's own report: from its header line to the end.
  sed -n '/^suite .*official µs/,$p' "$log"
  exit 0
fi

step "interop tests: ddbguard vs aws-db-esdk 1.3.0 (cargo test --locked)"
start=$SECONDS
cargo test --locked --no-fail-fast
echo "interop tests finished in $((SECONDS - start)) s"
