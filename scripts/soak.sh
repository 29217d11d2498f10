#!/usr/bin/env bash
# Soaks the stream reader's model test: many generated schedules of writes, splits, faults and worker
# lifecycles against the real reader (crates/stream/src/sim.rs; see crates/stream/README.md).
#
#   scripts/soak.sh [SCHEDULES] [SEED]     defaults: 10000 schedules, seed from the clock
#
# Prints the seed first. A failure prints the failing seed and a shrunk schedule; add that seed to
# crates/stream/src/sim_regressions.txt so that every test run replays it. About 10 ms per schedule.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ddbguard/target}"
export DDBGUARD_MODEL_CASES="${1:-10000}"
export DDBGUARD_MODEL_SEED="${2:-$(date +%s%N)}"
echo "soak: $DDBGUARD_MODEL_CASES schedules from DDBGUARD_MODEL_SEED=$DDBGUARD_MODEL_SEED"
cargo test -p ddbguard-stream --lib --locked -- --exact sim::generated_schedules_hold_the_invariants --nocapture
