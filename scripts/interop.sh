#!/usr/bin/env bash
# Interoperability of ddbguard's item format with the official AWS Database Encryption SDK crate
# (aws-db-esdk 1.3.0, a dev-dependency of the separate interop/ crate):
#
#   scripts/interop.sh          items written by either side decrypt on the other; edge cases are
#                               accepted or rejected alike; tampered items fail on both sides; branch
#                               keys made by either key store serve both hierarchical keyrings (one
#                               region, and across regions over a global key store table);
#                               items of every attribute type rewritten by the backfill engine
#                               (over the in-memory DynamoDB) decrypt with the official crate;
#                               `ddbguard item decrypt` (the binary, built first) prints the plaintext
#                               of an official item and names a flipped bit integrity_failed.
#                               `ddbguard backfill --from-legacy` (the binary) migrates 2,000 legacy
#                               DynamoDB Encryption Client items (direct KMS provider, local KMS) under
#                               a concurrent writer; the official crate decrypts every item.
#   scripts/interop.sh --bench  decrypt-and-verify and encrypt µs/item, ddbguard vs the official crate,
#                               3-, 9- and 30-attribute items, both suites, side by side with the
#                               primitive floor (release build), plus the bench's peak RSS.
#
# The first build of the official crate takes several minutes (longer in release); later runs reuse
# CARGO_TARGET_DIR_INTEROP (default ~/.cache/ddbguard/target-interop).
# INTEROP_CASES sets the number of cases per property (default 64 round trips, 96 tampers).
# The hierarchical keyring tests use the local AWS environment (moto 5.2.5 with multi-Region keys and
# global tables, scripts/local-aws): this script installs .venv, and the test process starts the
# environment on a free port and stops it on exit; DDBGUARD_TEST_ENDPOINT=http://HOST:PORT uses a
# running one instead.
set -euo pipefail
cd "$(dirname "$0")/.."

main_target="${CARGO_TARGET_DIR:-$HOME/.cache/ddbguard/target}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_INTEROP:-$HOME/.cache/ddbguard/target-interop}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

step() { printf '\n==> %s\n' "$*"; }

bench=false
case "${1:-}" in
  "") ;;
  --bench) bench=true ;;
  -h | --help)
    sed -n '2,/^set -e/p' "$0" | sed -n 's/^# \{0,1\}//p'
    exit 0
    ;;
  *)
    echo "usage: $0 [--bench]" >&2
    exit 2
    ;;
esac

cd interop

if $bench; then
  step "interop bench: decrypt and encrypt, ddbguard vs aws-db-esdk 1.3.0 (release)"
  export CRITERION_HOME="$CARGO_TARGET_DIR/criterion"
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  cargo bench --locked --bench compare 2>&1 | tee "$log"
  step "summary"
  # The bench prints the table after criterion's own report: from its header line to the end.
  sed -n '/^item .*official µs/,$p' "$log"
  exit 0
fi

if [[ -z "${DDBGUARD_TEST_ENDPOINT:-}" ]]; then
  step "local AWS environment for the hierarchical keyring tests (moto 5.2.5 in .venv)"
  ../scripts/local-aws install
fi

step "the ddbguard binary, for item decrypt of official items (main workspace, $main_target)"
CARGO_TARGET_DIR="$main_target" cargo build --locked --manifest-path ../Cargo.toml -p ddbguard --bin ddbguard
export DDBGUARD_BIN="$main_target/debug/ddbguard"

step "interop tests: ddbguard vs aws-db-esdk 1.3.0 (cargo test --locked)"
start=$SECONDS
cargo test --locked --no-fail-fast
echo "interop tests finished in $((SECONDS - start)) s"
