#!/usr/bin/env bash
# The local demo: two regions, a multi-Region key and a global table on the local AWS environment;
# an item encrypted by ddbguard in us-east-1, replicated, inspected and decrypted in ap-southeast-2
# with the replica key; legacy plaintext customers migrated (migrate plan/apply while the application
# writes, then audit in both regions and the replicas compared); the same with the hierarchical keyring (a branch key store that is a global
# table, one branch key wrapped under the MRK); then one flipped ciphertext bit and a disabled replica,
# and the verdicts they get.
#
# Needs Rust and Python 3 with venv; installs moto 5.2.5 into .venv on first use. Stops the local
# environment it started when it ends, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ddbguard/target}"
export DDBGUARD_LOCAL_PORT="${DDBGUARD_LOCAL_PORT:-4566}"
endpoint="http://127.0.0.1:$DDBGUARD_LOCAL_PORT"
table=DemoCustomers
key='{"pk":{"S":"customer#4711"},"sk":{"S":"profile"}}'

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
work=$(mktemp -d)
started=false
cleanup() {
  rm -rf "$work"
  if $started; then
    scripts/local-aws down >/dev/null 2>&1 || true
    echo "local AWS environment stopped"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "build ddbguard"
cargo build --quiet --locked -p ddbguard
ddbguard="$CARGO_TARGET_DIR/debug/ddbguard"

step "start the local two-region AWS environment"
if scripts/local-aws status >/dev/null 2>&1; then
  echo "already running; reusing it"
else
  started=true
  scripts/local-aws up
fi
aws() { .venv/bin/python scripts/demo/demo_aws.py --endpoint "$endpoint" "$@"; }
expect_failure() {
  set +e
  "$@"
  local code=$?
  set -e
  if [ "$code" -ne 1 ]; then
    echo "  unexpected exit code $code (expected 1)" >&2
    exit 1
  fi
  echo "  exit code 1, as it must be"
}
# `report CODE FILE COMMAND...`: runs a ddbguard command whose JSON report goes to FILE and its log to
# $work/ddbguard.log, and stops the demo unless it exits with CODE.
report() {
  local want=$1 out=$2
  shift 2
  set +e
  "$@" > "$out" 2>> "$work/ddbguard.log"
  local code=$?
  set -e
  if [ "$code" -ne "$want" ]; then
    echo "  unexpected exit code $code (expected $want); log: $work/ddbguard.log" >&2
    tail -5 "$work/ddbguard.log" >&2
    exit 1
  fi
  echo "  exit code $code"
}
# Prints selected fields of a JSON report on stdin: `summary KEY...` (dotted paths).
summary() {
  python3 -c '
import json, sys
doc = json.load(sys.stdin)
for path in sys.argv[1:]:
    value = doc
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            value = value.get(part) if isinstance(value, dict) else None
    print(f"  {path}: {json.dumps(value)}")
' "$@"
}

step "a multi-Region key in us-east-1, replicated to ap-southeast-2"
aws mrk --arn-file "$work/key_arn"
key_arn=$(cat "$work/key_arn")
for region in us-east-1 ap-southeast-2; do
  sed -e "s|@REGION@|$region|" -e "s|@KEY_ARN@|$key_arn|" -e "s|@ENDPOINT@|$endpoint|" \
    config/demo.toml.in > "$work/$region.toml"
done
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true

step "ddbguard keys check: key state and round trips in every region"
"$ddbguard" keys check --config "$work/ap-southeast-2.toml"

step "a global table over us-east-1 and ap-southeast-2"
aws table "$table"

step "encrypt a customer item in us-east-1 with ddbguard (kms-mrk keyring, suite 0x6701)"
echo "  plaintext: $(tr -d '\n ' < scripts/demo/customer.json | cut -c1-100)…"
"$ddbguard" item encrypt --config "$work/us-east-1.toml" --table "$table" scripts/demo/customer.json > "$work/encrypted.json"
python3 -c 'import json,sys; i=json.load(open(sys.argv[1])); print("  encrypted: " + ", ".join(f"{k}:{next(iter(v))}" for k,v in i.items()))' "$work/encrypted.json"

step "write it in us-east-1; read the replica in ap-southeast-2"
aws put --region us-east-1 --table "$table" "$work/encrypted.json"
aws get --region ap-southeast-2 --table "$table" --key "$key" > "$work/replica.json"
cmp -s <(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), sort_keys=True))' "$work/encrypted.json") \
       <(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), sort_keys=True))' "$work/replica.json") \
  && echo "  the replica is byte-for-byte the item written in us-east-1"

step "ddbguard item inspect (no key needed)"
"$ddbguard" item inspect --config "$work/ap-southeast-2.toml" --table "$table" "$work/replica.json"

step "ddbguard item decrypt in ap-southeast-2, with the local replica of the MRK"
"$ddbguard" item decrypt --config "$work/ap-southeast-2.toml" --table "$table" "$work/replica.json"

step "legacy plaintext: 300 customers written before the application adopted client-side encryption"
aws seed --region us-east-1 --table "$table" --count 300
echo "  ddbguard audit in us-east-1 finds them (exit 1):"
report 1 "$work/audit-before.json" "$ddbguard" audit --config "$work/us-east-1.toml" --table "$table"
summary by_verdict < "$work/audit-before.json"

step "the application now writes encrypted items (FORBID_PLAINTEXT_WRITE_ALLOW_PLAINTEXT_READ): 40 updates queued"
aws updates --count 40 > "$work/updates.jsonl"
"$ddbguard" item encrypt --config "$work/us-east-1.toml" --table "$table" - < "$work/updates.jsonl" > "$work/updates-encrypted.jsonl"

step "ddbguard migrate plan: a dry run of migrations/0001 — what changes and what it costs (nothing written)"
report 0 "$work/plan.json" "$ddbguard" migrate plan --config "$work/us-east-1.toml" --migrations migrations
summary migrations.0.id migrations.0.plan.items_by_outcome migrations.0.plan.read_units \
  migrations.0.plan.kms_calls migrations.0.plan.estimated_seconds < "$work/plan.json"

step "ddbguard migrate apply, while the application keeps writing its encrypted updates"
aws writer --region us-east-1 --table "$table" --seconds 3 "$work/updates-encrypted.jsonl" &
writer=$!
report 0 "$work/apply.json" "$ddbguard" migrate apply --config "$work/us-east-1.toml" --migrations migrations
wait "$writer"
summary migrations.0.id migrations.0.report.progress.outcomes migrations.0.report.progress.write_units \
  migrations.0.report.progress.kms_calls < "$work/apply.json"
echo "  migrate status:"
report 0 "$work/status.json" "$ddbguard" migrate status --config "$work/us-east-1.toml" --migrations migrations
summary migrations < "$work/status.json"

step "ddbguard audit in both regions, then the replicas compared item by item"
sleep 2 # the last writes replicate
for region in us-east-1 ap-southeast-2; do
  echo "  $region:"
  report 0 "$work/audit-$region.json" "$ddbguard" audit --config "$work/$region.toml" --table "$table"
  summary by_verdict passed < "$work/audit-$region.json"
done
echo "  us-east-1 compared with ap-southeast-2:"
report 0 "$work/compare.json" "$ddbguard" audit --config "$work/us-east-1.toml" --table "$table" --compare-region ap-southeast-2
summary passed compare < "$work/compare.json"

step "an application update written during the migration survived it (decrypted in ap-southeast-2)"
aws get --region ap-southeast-2 --table "$table" --key '{"pk":{"S":"customer#10007"},"sk":{"S":"profile"}}' > "$work/updated.json"
"$ddbguard" item decrypt --config "$work/ap-southeast-2.toml" --table "$table" "$work/updated.json" | summary pk.S email.S

step "hierarchical keyring: a branch key store (a global table) and a branch key wrapped under the MRK"
aws table --key-store DemoBranchKeys
hierarchy_config() { # REGION [BRANCH_KEY_ID]: the demo config with a hierarchy keyring
  sed '/^\[tables.keyring\]/,$d' "$work/$1.toml"
  printf '[tables.keyring]\nkind = "hierarchy"\nkey_arn = "%s"\nkey_store_table = "DemoBranchKeys"\n' "$key_arn"
  if [ -n "${2:-}" ]; then printf 'branch_key_id = "%s"\n' "$2"; fi
}
hierarchy_config us-east-1 > "$work/h-setup.toml"
"$ddbguard" keys branch create --config "$work/h-setup.toml" --table "$table" | tee "$work/branch.json"
branch_key_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["branch_key_id"])' "$work/branch.json")
hierarchy_config us-east-1 "$branch_key_id" > "$work/h-us-east-1.toml"
hierarchy_config ap-southeast-2 > "$work/h-ap-southeast-2.toml"

step "encrypt under the branch key in us-east-1, write it; decrypt the replica in ap-southeast-2"
sed 's/customer#4711/customer#4712/' scripts/demo/customer.json > "$work/customer2.json"
"$ddbguard" item encrypt --config "$work/h-us-east-1.toml" --table "$table" "$work/customer2.json" > "$work/h-encrypted.json"
aws put --region us-east-1 --table "$table" "$work/h-encrypted.json"
aws get --region ap-southeast-2 --table "$table" --key "${key/4711/4712}" > "$work/h-replica.json"
"$ddbguard" item decrypt --config "$work/h-ap-southeast-2.toml" --table "$table" "$work/h-replica.json"
echo "  (no branch_key_id in the ap-southeast-2 config: the reader takes it from the item's EDK)"

step "ddbguard keys branch show in ap-southeast-2: the replicated branch key unwraps with the local replica"
"$ddbguard" keys branch show --config "$work/h-ap-southeast-2.toml" --table "$table" --branch-key-id "$branch_key_id"


step "flip one bit of the encrypted ssn and decrypt again"
aws flip-bit --attribute ssn < "$work/replica.json" > "$work/tampered.json"
expect_failure "$ddbguard" item decrypt --config "$work/ap-southeast-2.toml" --table "$table" "$work/tampered.json"

step "disable the replica in ap-southeast-2: keys check and decrypt there now fail"
aws disable --region ap-southeast-2 "${key_arn/us-east-1/ap-southeast-2}"
expect_failure "$ddbguard" keys check --config "$work/ap-southeast-2.toml"
expect_failure "$ddbguard" item decrypt --config "$work/ap-southeast-2.toml" --table "$table" "$work/replica.json"

step "done"
