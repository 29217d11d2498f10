#!/usr/bin/env bash
# Throughput of the whole `ddbguard verify` pipeline, in process and in release mode: the real stream reader
# (leases, one task per shard, a checkpoint per batch) over an in-memory stream of pre-encrypted items, into the
# real verifier and its Prometheus metrics. Prints a markdown table: records/s, CPU µs per record and peak RSS for
# the reader alone, `ok_structural` (KMS MRK keyring, sample_rate 0), and full verification with a hierarchical
# keyring and with the KMS MRK keyring over an in-memory KMS, each with suites 0x6701 and 0x6700. The bench checks
# every verdict, count and checkpoint, and fails if anything was skipped. See crates/verify/README.md#benchmark.
#
# Then the `ddbguard backfill` engine over an in-memory table of plaintext items (crates/backfill/benches/backfill.rs):
# items/s, CPU µs per item and items/s per core, consumed read and write capacity per item against the minimum,
# KMS calls per item and peak RSS, for the `kms-mrk` and `hierarchy` keyrings with suites 0x6701 and 0x6700. It
# checks that every item was encrypted once and decrypts to its original. See docs/BENCHMARKS.md#backfill.
#
#   scripts/bench.sh                                  # 30000 records / 20000 items per scenario
#   DDBGUARD_BENCH_RECORDS=100000 scripts/bench.sh    # more records (the stream is held in memory: ~5 KiB each)
#   DDBGUARD_BENCH_ITEMS=100000 scripts/bench.sh      # more backfill items (the table is held in memory)
#
# Needs only Rust; nothing runs in the background. Records/s depend on the cores free at the time (the table
# prints the load average); CPU µs per record much less so.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ddbguard/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

echo "uptime: $(uptime)" >&2
cargo bench --locked -p ddbguard-verify --bench pipeline
cargo bench --locked -p ddbguard-backfill --bench backfill
