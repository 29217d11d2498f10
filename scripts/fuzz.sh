#!/usr/bin/env bash
# Fuzzes every parser of outside bytes for SECONDS each (default 60): the DB-ESDK header codec, the
# footer codec, typed value deserialization and whole-item decrypt under a fixed key; the AWS Encryption SDK
# message header and structure walk, and whole-message decrypt under a fixed key.
#
#   scripts/fuzz.sh 600            # ten minutes per target
#   scripts/fuzz.sh 60 header      # one target
#
# Uses cargo-fuzz (installed on first use) with libFuzzer and AddressSanitizer. cargo-fuzz passes
# nightly-only sanitizer flags; on the stable toolchain they are enabled with RUSTC_BOOTSTRAP=1, which
# affects only this fuzz build. Each run starts from the committed seeds in fuzz/seeds/<target> plus
# the corpus grown by earlier runs in fuzz/corpus/<target> (not committed); new entries go to the
# latter. Crashes land in fuzz/artifacts/<target> and make this script fail. See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_FUZZ:-$HOME/.cache/ddbguard/target-fuzz}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

cd fuzz
for target in "${targets[@]}"; do
  printf '\n==> fuzz %s for %ss\n' "$target" "$seconds"
  mkdir -p "corpus/$target"
  log="$(mktemp)"
  status=0
  cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 \
    || status=$?
  grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz target $target failed (exit $status); crash inputs, if any, are in fuzz/artifacts/$target" >&2
    exit 1
  fi
  rm -f "$log"
done
