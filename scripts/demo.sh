#!/usr/bin/env bash
# The local demo, one function per act (the list at the end runs them in order):
#
#   act_setup        two regions, a multi-Region key and a global table on the local AWS environment
#   act_item         an item encrypted by ddbguard in us-east-1, replicated, inspected and decrypted in
#                    ap-southeast-2 with the replica key
#   act_migration    legacy plaintext customers migrated (migrate plan/apply while the application writes),
#                    then audit in both regions and the replicas compared
#   act_hierarchy    the hierarchical keyring: a branch key store that is a global table, one branch key
#   act_legacy       items of the legacy DynamoDB Encryption Client (its official Python client, direct KMS
#                    provider, us-east-1) audited in ap-southeast-2 with the replica key, then migrated to the
#                    DB-ESDK format with `backfill --from-legacy`
#   act_aurora       the second system (when PostgreSQL 15 is installed; DDBGUARD_DEMO_AURORA=0 skips it): the
#                    Aurora stand-in, a PostgreSQL primary ("us-east-1") and hot standby ("ap-southeast-2");
#                    plaintext rows audited on the standby, `sql backfill` under the MRK on the primary, the
#                    standby audited with the replica key and compared with the primary, replay paused and
#                    resumed, a ciphertext moved between rows, a backfilled value decrypted by the official
#                    Python AWS Encryption SDK in ap-southeast-2
#   act_verifiers    one long-running `ddbguard verify` per region and table (canaries every second); clean
#                    items written in both regions, under the kms-mrk keyring (DemoCustomers) and the
#                    hierarchical keyring (DemoOrders)
#   fault_*          one fault at a time, each checked against what both verifiers report: replication paused,
#                    a plaintext SSN, an item under a single-Region key, a flipped ciphertext bit, the
#                    ap-southeast-2 replica key disabled (quarantined, enabled again, `quarantine replay`)
#   act_scoreboard   one table: each fault, what each region's verifier reported, the metric that showed it;
#                    exit 1 if a fault went undetected or a clean record was flagged
#
# A new act is a function added to the list at the end.
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

step() { printf '\n\033[1m==> %s\033[0m  [%ss]\n' "$*" "$SECONDS"; }
work=$(mktemp -d)
started=false
pg_started=false
cleanup() {
  # The verifiers (background jobs) stop with the demo, whatever its end.
  local job
  for job in $(jobs -p); do kill -TERM "$job" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  if $pg_started; then
    scripts/local-aws.d/pg.sh down >/dev/null 2>&1 || true
    echo "PostgreSQL stand-in stopped"
  fi
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
  # The PostgreSQL stand-in is started by act_aurora, when PostgreSQL is installed.
  DDBGUARD_LOCAL_PG=0 scripts/local-aws up
fi
aws() { .venv/bin/python scripts/demo/demo_aws.py --endpoint "$endpoint" "$@"; }
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


# ---- acts ----------------------------------------------------------------------------------------------------

act_setup() {
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
}

act_item() {
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
}

act_migration() {
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
}

act_hierarchy() {
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
}

act_legacy() {
  local legacy=DemoLegacyCustomers count=20
  step "the legacy DynamoDB Encryption Client: $count customers written by its official Python client in us-east-1"
  aws table "$legacy"
  legacy_config() { # REGION [plain]: the demo config for the legacy table, with its [tables.legacy] section
    sed -e "s/^name = \"$table\"/name = \"$legacy\"/" -e 's/^logical_name = .*/logical_name = "LegacyCustomers"/' \
      "$work/$1.toml"
    if [ "${2:-}" != plain ]; then
      printf '\n[tables.legacy]\nallowed = true\nprovider = "aws-kms"   # its KMS key: the keyring'"'"'s MRK\n'
    fi
  }
  legacy_config us-east-1 > "$work/legacy-us-east-1.toml"
  legacy_config ap-southeast-2 > "$work/legacy-ap-southeast-2.toml"
  legacy_config ap-southeast-2 plain > "$work/migrated-ap-southeast-2.toml"
  # dynamodb-encryption-sdk 3.3.0 (scripts/local-aws.d/ddbec_interop.py), AwsKmsCryptographicMaterialsProvider
  # under the MRK in us-east-1, the application's actions: the client's default ENCRYPT_AND_SIGN, tier signed only,
  # note untouched.
  aws plain-item --count "$count" 30000 | .venv/bin/python -c '
import json, sys
key_arn, table = sys.argv[1], sys.argv[2]
actions = {"default": "ENCRYPT_AND_SIGN", "attributes": {"tier": "SIGN_ONLY", "note": "DO_NOTHING"}}
ops = [{"op": "put", "region": "us-east-1", "table": table, "key_id": key_arn, "actions": actions, "item": json.loads(line)}
       for line in sys.stdin]
json.dump({"endpoint": sys.argv[3], "ops": ops}, sys.stdout)' "$key_arn" "$legacy" "$endpoint" > "$work/legacy-ops.json"
  .venv/bin/python scripts/local-aws.d/ddbec_interop.py < "$work/legacy-ops.json" > "$work/legacy-written.json"
  python3 -c '
import json, sys
results = json.load(open(sys.argv[1]))["results"]
failed = [r for r in results if not r["ok"]]
if failed:
    sys.exit(f"  the Python client failed: {failed[0]}")
calls = [c["operation"] for r in results for c in r["kms_calls"]]
print(f"  {len(results)} items written by EncryptedClient.put_item; KMS: {len(calls)} {calls[0]} in us-east-1")' \
    "$work/legacy-written.json"
  sleep 1 # replication
  aws get --region ap-southeast-2 --table "$legacy" --key '{"pk":{"S":"customer#40000"},"sk":{"S":"profile"}}' \
    > "$work/legacy-item.json"
  echo "  ddbguard item inspect in ap-southeast-2 (no key needed):"
  "$ddbguard" item inspect --config "$work/legacy-ap-southeast-2.toml" --table "$legacy" "$work/legacy-item.json" \
    | summary format material_description

  step "ddbguard audit in ap-southeast-2: legacy items verified and decrypted with the local replica of the MRK"
  report 0 "$work/legacy-audit-before.json" "$ddbguard" audit --config "$work/legacy-ap-southeast-2.toml" --table "$legacy"
  summary by_verdict by_format passed < "$work/legacy-audit-before.json"
  echo "  the same audit without [tables.legacy] (a table that should hold no legacy item):"
  report 1 "$work/legacy-audit-plain.json" "$ddbguard" audit --config "$work/migrated-ap-southeast-2.toml" --table "$legacy"
  summary by_verdict passed < "$work/legacy-audit-plain.json"

  step "ddbguard backfill --from-legacy in us-east-1: each item verified, decrypted and rewritten as a DB-ESDK item"
  report 0 "$work/legacy-backfill.json" "$ddbguard" backfill --config "$work/legacy-us-east-1.toml" --table "$legacy" --region us-east-1 \
    --from-legacy --job "legacy-$run_id"
  summary progress.outcomes progress.kms_calls < "$work/legacy-backfill.json"

  step "after the migration, in ap-southeast-2: audit without [tables.legacy] (a legacy item left would fail it)"
  sleep 1 # replication
  aws get --region ap-southeast-2 --table "$legacy" --key '{"pk":{"S":"customer#40000"},"sk":{"S":"profile"}}' \
    > "$work/legacy-migrated.json"
  "$ddbguard" item inspect --config "$work/legacy-ap-southeast-2.toml" --table "$legacy" "$work/legacy-migrated.json" \
    | summary format algorithm_suite encrypted_data_keys.0.key_arn
  report 0 "$work/legacy-audit-after.json" "$ddbguard" audit --config "$work/migrated-ap-southeast-2.toml" --table "$legacy"
  summary by_verdict by_format passed < "$work/legacy-audit-after.json"
  "$ddbguard" item decrypt --config "$work/migrated-ap-southeast-2.toml" --table "$legacy" "$work/legacy-migrated.json" \
    | summary pk.S email.S tier.S
}

act_aurora() {
  if [ "${DDBGUARD_DEMO_AURORA:-1}" = 0 ]; then
    return 0
  fi
  local pg_bin=${DDBGUARD_PG_BIN:-/usr/lib/postgresql/15/bin}
  if [ ! -x "$pg_bin/postgres" ] || [ ! -x "$pg_bin/psql" ]; then
    step "Aurora Global Database: skipped, PostgreSQL 15 is not installed (Debian: apt-get install postgresql-15)"
    return 0
  fi
  psql() { "$pg_bin/psql" -X "$@"; } # -X: no ~/.psqlrc, whose settings could change the output parsed below
  step "Aurora stand-in: a PostgreSQL 15 primary (us-east-1) and a hot standby fed by streaming replication (ap-southeast-2)"
  if scripts/local-aws.d/pg.sh status > "$work/pg.env" 2>/dev/null; then
    echo "  already running; reusing it"
  elif scripts/local-aws.d/pg.sh up > "$work/pg.env" 2> "$work/pg.err"; then
    pg_started=true
  else
    pg_started=true # a half-started pair is stopped at the end
    echo "  the stand-in did not start; the Aurora act is skipped:" >&2
    sed 's/^/    /' "$work/pg.err" >&2
    return 0
  fi
  sed 's/^/  /' "$work/pg.env"
  local pg_primary pg_replica sql_table=demo_patients rows=200
  pg_primary=$(sed -n 's/^pg_primary=//p' "$work/pg.env")
  pg_replica=$(sed -n 's/^pg_replica=//p' "$work/pg.env")
  export PGPASSFILE
  PGPASSFILE=$(sed -n 's/^pg_passfile=//p' "$work/pg.env")
  for region in us-east-1 ap-southeast-2; do
    cat > "$work/aurora-$region.toml" <<TOML
[aws]
region = "$region"
regions = ["us-east-1", "ap-southeast-2"]
endpoint_url = "$endpoint"

[sql]
primary = "$pg_primary"
home_region = "us-east-1"
[sql.replicas]
"ap-southeast-2" = "$pg_replica"

[[sql_tables]]
name = "$sql_table"
primary_key = ["id"]
[sql_tables.columns]
ssn = { encoding = "base64" }
[sql_tables.encryption_context]   # what the application binds to each value
table = "patients"
column = "{column}"
id = "{row.id}"
[sql_tables.keyring]
kind = "kms-mrk"
key_arn = "$key_arn"
TOML
  done
  psql -q "$pg_primary" -v ON_ERROR_STOP=1 <<SQL
SET client_min_messages = warning;
DROP TABLE IF EXISTS $sql_table;
CREATE TABLE $sql_table (id bigint PRIMARY KEY, name text, ssn text);
INSERT INTO $sql_table SELECT g, 'patient ' || g, '078-05-' || lpad(g::text, 4, '0') FROM generate_series(1, $rows) g;
SQL
  echo "  $rows patients with plaintext SSNs on the primary"
  sql_audit() { # REGION [FLAGS...]: sql audit's summary
    local region=$1 want=$2
    shift 2
    report "$want" "$work/sql-audit.json" "$ddbguard" sql audit --config "$work/aurora-$region.toml" --table "$sql_table" "$@"
    summary by_verdict compare_primary < "$work/sql-audit.json"
  }
  wait_replayed() {
    local lsn
    lsn=$(psql -At "$pg_primary" -c 'SELECT pg_current_wal_lsn()')
    for _ in $(seq 100); do
      [ "$(psql -At "$pg_replica" -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'")" = t ] && return 0
      sleep 0.1
    done
    echo "  the standby did not replay $lsn" >&2
    return 1
  }
  wait_replayed

  step "ddbguard sql audit in ap-southeast-2, on the standby (exit 1: plaintext)"
  sql_audit ap-southeast-2 1

  step "ddbguard sql backfill on the primary: each value encrypted under the MRK, conditional on the value read"
  report 0 "$work/sql-backfill.json" "$ddbguard" sql backfill --config "$work/aurora-us-east-1.toml" --table "$sql_table" \
    --job "demo-$run_id"
  summary encrypted already_encrypted kms_requests < "$work/sql-backfill.json"

  step "ddbguard sql audit --compare-primary in ap-southeast-2: decrypted with the local replica of the MRK"
  wait_replayed
  sql_audit ap-southeast-2 0 --compare-primary

  step "the official Python AWS Encryption SDK decrypts a backfilled value on the standby with the ap-southeast-2 replica"
  psql -At "$pg_replica" -c "SELECT ssn FROM $sql_table WHERE id = 7" > "$work/sql-value.txt"
  .venv/bin/python -c '
import json, sys
print(json.dumps({"endpoint": sys.argv[1], "ops": [{"op": "decrypt", "key_arn": sys.argv[2], "ciphertext": open(sys.argv[3]).read().strip()}]}))' \
    "$endpoint" "${key_arn/us-east-1/ap-southeast-2}" "$work/sql-value.txt" \
    | .venv/bin/python scripts/local-aws.d/esdk_interop.py > "$work/sql-python.json"
  python3 -c '
import base64, json, sys
r = json.load(open(sys.argv[1]))["results"][0]
if not r["ok"]:
    sys.exit(f"  the Python SDK failed: {r}")
suite, context, plaintext = r["suite"], json.dumps(r["encryption_context"], sort_keys=True), r["plaintext"]
print(f"  suite 0x{suite}, encryption context {context}")
print(f"  plaintext: {base64.b64decode(plaintext).decode()}")' "$work/sql-python.json"

  step "replication paused on the standby: a new row on the primary is missing on the secondary until replay resumes"
  scripts/local-aws pg-pause > /dev/null
  psql -q "$pg_primary" -c "INSERT INTO $sql_table VALUES ($((rows + 1)), 'patient $((rows + 1))', NULL)"
  sql_audit ap-southeast-2 1 --compare-primary
  scripts/local-aws pg-resume > /dev/null
  wait_replayed
  echo "  replay resumed:"
  sql_audit ap-southeast-2 0 --compare-primary

  step "a ciphertext moved to another row on the primary: the encryption context catches it (integrity_failed)"
  psql -q "$pg_primary" -c "UPDATE $sql_table SET ssn = (SELECT ssn FROM $sql_table WHERE id = 2) WHERE id = 1"
  wait_replayed
  sql_audit ap-southeast-2 1
  python3 -c '
import json, sys
for f in json.load(open(sys.argv[1]))["findings"]:
    print(f"  finding: {json.dumps(f, sort_keys=True)}")' "$work/sql-audit.json"
}

# ---- the verifiers and the faults ------------------------------------------------------------------------------

regions=(us-east-1 ap-southeast-2)
declare -A port pid
verifiers=()
scoreboard="$work/scoreboard.tsv"
undetected=0
# Failing verdicts each verifier must have counted by the end (anything more is a clean record flagged).
declare -A expected_failures

url() { echo "http://127.0.0.1:${port[$1]}/metrics"; }
# `metric REGION NAME [LABEL=VALUE...]`: the current value (sum of matching series, 0 when none).
metric() { local region=$1 name=$2; shift 2; aws metric --url "$(url "$region")" "${@/#/--label=}" "$name"; }
# `wait_metric REGION SECONDS AT_LEAST NAME [LABEL=VALUE...]`: waits for the value; prints it; 1 on timeout.
wait_metric() {
  local region=$1 seconds=$2 at_least=$3 name=$4; shift 4
  aws metric --url "$(url "$region")" --wait "$seconds" --at-least "$at_least" "${@/#/--label=}" "$name"
}
row() { printf '%s\t%s\t%s\t%s\n' "$@" >> "$scoreboard"; }
records() { metric "$1" ddbguard_records_total "verdict=$2"; }
# `expect_records FAULT VERDICT N REGION...`: waits until each region's verifier counted N more records with
# VERDICT than before the fault (baseline in $base_REGION); prints what each saw.
declare -A base
baseline() { local v=$1 r; for r in "${regions[@]}"; do base[$r]=$(records "$r" "$v"); done; }
expect_records() {
  local verdict=$1 n=$2 r want got
  shift 2
  for r in "$@"; do
    want=$(python3 -c "print(${base[$r]} + $n)")
    if got=$(wait_metric "$r" 20 "$want" ddbguard_records_total "verdict=$verdict"); then
      seen[$r]="$verdict ($n record)"
      expected_failures[$r:$verdict]=$(( ${expected_failures[$r:$verdict]:-0} + n ))
    else
      seen[$r]="NOT DETECTED ($verdict: $got, wanted $want)"
      undetected=$((undetected + 1))
    fi
    echo "  $r: ${seen[$r]}"
  done
}
declare -A seen

# Encrypts plaintext item N (customer#2xxxx) in REGION with that region's config; prints the encrypted JSON path.
encrypted_customer() {
  local region=$1 n=$2 config=${3:-$work/$1.toml}
  aws plain-item "$n" > "$work/plain-$n.json"
  "$ddbguard" item encrypt --config "$config" --table "$table" "$work/plain-$n.json" > "$work/enc-$n.json"
  echo "$work/enc-$n.json"
}
put_in() { aws put --region "$1" --table "$table" "$2" > /dev/null; }

# `start_verifier NAME CONFIG TABLE`: a long-running verifier in the background, metrics on a free port.
start_verifier() {
  local name=$1 config=$2 tbl=$3
  port[$name]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >> "$config" <<TOML

[verify]
lease_table = "demo-leases-$run_id"
quarantine_table = "demo-quarantine-$run_id"
canary_interval = "1s"
canary_slo = "5s"
TOML
  DDBGUARD_LOG=info "$ddbguard" verify --config "$config" --table "$tbl" --from latest \
    --metrics-addr "127.0.0.1:${port[$name]}" 2> "$work/verify-$name.log" &
  pid[$name]=$!
  verifiers+=("$name")
  echo "  $name ($tbl): pid ${pid[$name]}, metrics $(url "$name")"
}

# `wait_canaries PREFIX TABLE`: until the canaries of both regions arrive in both regions' verifiers.
wait_canaries() {
  local r origin
  for r in "${regions[@]}"; do
    for origin in "${regions[@]}"; do
      wait_metric "$1$r" 30 1 ddbguard_canaries_total "origin_region=$origin" "verdict=ok" > /dev/null ||
        { echo "  no canary from $origin arrived in $1$r; log: $work/verify-$1$r.log" >&2; tail -5 "$work/verify-$1$r.log" >&2; exit 1; }
    done
    echo "  $1$r: the canaries of $2 from both regions arrive and decrypt (ddbguard_canaries_total{verdict=\"ok\"})"
  done
}

# `write_clean REGION CONFIG TABLE FIRST COUNT`: customers FIRST.. encrypted by `ddbguard item encrypt` with
# CONFIG, written in REGION.
write_clean() {
  aws plain-item --count "$5" "$4" > "$work/clean.jsonl"
  "$ddbguard" item encrypt --config "$2" --table "$3" - < "$work/clean.jsonl" > "$work/clean-encrypted.jsonl"
  aws writer --region "$1" --table "$3" --seconds 0 "$work/clean-encrypted.jsonl"
}

act_verifiers() {
  step "one long-running ddbguard verify per region (canaries every 1 s, SLO 5 s; quarantine on)"
  local r want got
  for r in "${regions[@]}"; do
    start_verifier "$r" "$work/$r.toml" "$table"
  done
  wait_canaries "" "$table"

  step "a second table, DemoOrders, under the hierarchical keyring (the branch key made above), verified too"
  aws table DemoOrders
  for r in "${regions[@]}"; do
    sed -e "s|^region = .*|region = \"$r\"|" -e 's|^name = "DemoCustomers"|name = "DemoOrders"|' \
      -e 's|^logical_name = "Customers"|logical_name = "Orders"|' "$work/h-us-east-1.toml" > "$work/orders-$r.toml"
    start_verifier "orders@$r" "$work/orders-$r.toml" DemoOrders
  done
  wait_canaries "orders@" DemoOrders

  step "the application writes in both regions: 10 customers (kms-mrk keyring), 5 orders (hierarchical keyring)"
  local first=20000 total=0
  for r in "${regions[@]}"; do
    write_clean "$r" "$work/$r.toml" "$table" "$first" 10
    write_clean "$r" "$work/orders-$r.toml" DemoOrders "$((first + 10))" 5
    first=$((first + 100))
  done
  for r in "${verifiers[@]}"; do
    want=$([[ $r == orders@* ]] && echo 10 || echo 20)
    got=$(wait_metric "$r" 20 "$want" ddbguard_records_total verdict=ok) || true
    echo "  $r: $got of $want records ok"
  done
}

fault_pause_replication() {
  step "fault: replication from us-east-1 to ap-southeast-2 paused"
  local started took
  aws replication pause --table "$table" --source us-east-1 --target ap-southeast-2
  started=$(date +%s.%N)
  if wait_metric ap-southeast-2 20 1 ddbguard_canary_missing origin_region=us-east-1 > /dev/null; then
    took=$(python3 -c "print(f'{$(date +%s.%N) - $started:.1f}')")
    seen[ap-southeast-2]="us-east-1 missing after ${took} s"
  else
    seen[ap-southeast-2]="NOT DETECTED"
    undetected=$((undetected + 1))
  fi
  echo "  ap-southeast-2: ${seen[ap-southeast-2]}"
  seen[us-east-1]="ap-southeast-2 present (missing=$(metric us-east-1 ddbguard_canary_missing origin_region=ap-southeast-2))"
  echo "  us-east-1: ${seen[us-east-1]}"
  aws replication resume --table "$table" --source us-east-1 --target ap-southeast-2
  if aws metric --url "$(url ap-southeast-2)" --wait 20 --equals 0 --label origin_region=us-east-1 \
      ddbguard_canary_missing > /dev/null; then
    seen[ap-southeast-2]="${seen[ap-southeast-2]}, cleared after resume"
  else
    seen[ap-southeast-2]="${seen[ap-southeast-2]}, NOT cleared after resume"
    undetected=$((undetected + 1))
  fi
  echo "  ap-southeast-2: cleared: $(metric ap-southeast-2 ddbguard_canary_missing origin_region=us-east-1 | sed 's/^0$/yes/')"
  row "replication us-east-1 -> ap-southeast-2 paused" "${seen[us-east-1]}" "${seen[ap-southeast-2]}" \
    'ddbguard_canary_missing{origin_region="us-east-1"}'
}

fault_plaintext_ssn() {
  step "fault: a writer in ap-southeast-2 stores an SSN in plaintext"
  aws plain-item 29001 > "$work/plaintext.json"
  baseline plaintext
  put_in ap-southeast-2 "$work/plaintext.json"
  expect_records plaintext 1 "${regions[@]}"
  row "plaintext SSN written in ap-southeast-2" "${seen[us-east-1]}" "${seen[ap-southeast-2]}" \
    'ddbguard_records_total{verdict="plaintext"}'
}

fault_single_region_key() {
  step "fault: a writer in us-east-1 encrypts under a single-Region key"
  local single
  single=$(aws single-key --region us-east-1)
  sed "s|^key_arn = .*|key_arn = \"$single\"|" "$work/us-east-1.toml" > "$work/single.toml"
  baseline key_not_mrk
  put_in us-east-1 "$(encrypted_customer us-east-1 29002 "$work/single.toml")"
  expect_records key_not_mrk 1 "${regions[@]}"
  row "item under a single-Region key (us-east-1)" "${seen[us-east-1]}" "${seen[ap-southeast-2]}" \
    'ddbguard_records_total{verdict="key_not_mrk"}'
}

fault_flipped_bit() {
  step "fault: one bit of an encrypted ssn flipped (written in us-east-1)"
  aws flip-bit --attribute ssn < "$(encrypted_customer us-east-1 29003)" > "$work/flipped.json"
  baseline integrity_failed
  put_in us-east-1 "$work/flipped.json"
  expect_records integrity_failed 1 "${regions[@]}"
  row "ciphertext bit flipped (us-east-1)" "${seen[us-east-1]}" "${seen[ap-southeast-2]}" \
    'ddbguard_records_total{verdict="integrity_failed"}'
}

fault_disabled_replica() {
  step "fault: the ap-southeast-2 replica of the MRK disabled; an item written in us-east-1"
  local replica_arn=${key_arn/us-east-1/ap-southeast-2} canary
  aws disable --region ap-southeast-2 "$replica_arn"
  baseline key_unavailable
  local ok_east
  ok_east=$(records us-east-1 ok)
  put_in us-east-1 "$(encrypted_customer us-east-1 29004)"
  expect_records key_unavailable 1 ap-southeast-2
  if canary=$(wait_metric ap-southeast-2 20 1 ddbguard_canaries_total origin_region=us-east-1 verdict=key_unavailable); then
    seen[ap-southeast-2]="${seen[ap-southeast-2]}; $canary canaries key_unavailable"
  else
    seen[ap-southeast-2]="${seen[ap-southeast-2]}; canaries NOT DETECTED"
    undetected=$((undetected + 1))
  fi
  echo "  ap-southeast-2 canaries from us-east-1: key_unavailable"
  if wait_metric us-east-1 20 "$(python3 -c "print($ok_east + 1)")" ddbguard_records_total verdict=ok > /dev/null; then
    seen[us-east-1]="ok (its replica is enabled)"
  else
    seen[us-east-1]="FLAGGED"
    undetected=$((undetected + 1))
  fi
  echo "  us-east-1: ${seen[us-east-1]}"
  echo "  quarantined in ap-southeast-2:"
  sleep 1 # the quarantine writer is off the stream's path
  "$ddbguard" quarantine list --config "$work/ap-southeast-2.toml" --verdict key_unavailable --open |
    python3 -c 'import json,sys; [print("    %s: %s/%s keys %s" % (e["id"], e["verdict"], e["reason"], json.dumps(e["keys"]))) for e in json.load(sys.stdin)]'

  step "the replica enabled again; quarantine replay turns the record ok"
  aws enable --region ap-southeast-2 "$replica_arn"
  report 0 "$work/replay.json" "$ddbguard" quarantine replay --config "$work/ap-southeast-2.toml" --verdict key_unavailable
  summary replayed resolved still_failing entries.0.verdict_before entries.0.verdict < "$work/replay.json"
  local resolved
  resolved=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["resolved"])' "$work/replay.json")
  if [ "$resolved" -ge 1 ]; then
    seen[ap-southeast-2]="${seen[ap-southeast-2]}; quarantined, replay: $resolved resolved ok"
  else
    seen[ap-southeast-2]="${seen[ap-southeast-2]}; replay resolved NOTHING"
    undetected=$((undetected + 1))
  fi
  row "ap-southeast-2 replica key disabled" "${seen[us-east-1]}" "${seen[ap-southeast-2]}" \
    'ddbguard_records_total{verdict="key_unavailable"}, ddbguard_canaries_total{verdict="key_unavailable"}'
}

act_scoreboard() {
  step "what each region's verifier reported"
  local r flagged=0 v count want key
  # Clean records flagged: any failing verdict beyond the faults'.
  for r in "${verifiers[@]}"; do
    while read -r v count; do
      case $v in ok | ok_structural | remove) continue ;; esac
      want=${expected_failures[$r:$v]:-0}
      if [ "$count" != "$want" ]; then
        echo "  $r: $count records $v, expected $want" >&2
        flagged=$((flagged + 1))
      fi
    done < <(aws verdicts --url "$(url "$r")")
    # ... and every expected failure was counted.
    for key in "${!expected_failures[@]}"; do
      [[ $key == "$r:"* ]] || continue
      count=$(records "$r" "${key#*:}")
      if [ "$(python3 -c "print(int(float('$count')))")" != "${expected_failures[$key]}" ]; then
        echo "  $r: $count records ${key#*:}, expected ${expected_failures[$key]}" >&2
        flagged=$((flagged + 1))
      fi
    done
  done
  row "clean customers (kms-mrk; 10 per region, +1 while the replica was disabled)" "ok: $(records us-east-1 ok)" \
    "ok: $(records ap-southeast-2 ok)" 'ddbguard_records_total{verdict="ok"}'
  row "clean orders (hierarchical keyring; 5 per region)" "ok: $(records orders@us-east-1 ok)" \
    "ok: $(records orders@ap-southeast-2 ok)" 'ddbguard_records_total{verdict="ok"}'
  python3 - "$scoreboard" <<'PY'
import sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
head = ["fault", "us-east-1 verifier", "ap-southeast-2 verifier", "metric"]
widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
line = lambda r: "  " + " | ".join(c.ljust(w) for c, w in zip(r, widths))
print(line(head))
print("  " + "-+-".join("-" * w for w in widths))
for r in rows:
    print(line(r))
PY
  for r in "${verifiers[@]}"; do
    kill -TERM "${pid[$r]}" 2>/dev/null || true
  done
  local stopped_at=$SECONDS
  for r in "${verifiers[@]}"; do
    wait "${pid[$r]}" 2>/dev/null || true
    unset "pid[$r]"
  done
  echo "  all ${#verifiers[@]} verifiers stopped $((SECONDS - stopped_at)) s after SIGTERM"
  if [ "$undetected" -gt 0 ] || [ "$flagged" -gt 0 ]; then
    echo "  FAILED: $undetected fault check(s) undetected, $flagged clean-record check(s) flagged" >&2
    exit 1
  fi
  echo "  every fault detected, no clean record flagged"
}

# ---- the story ------------------------------------------------------------------------------------------------

run_id=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:8])')
acts=(
  act_setup act_item act_migration act_hierarchy act_legacy act_aurora
  act_verifiers fault_pause_replication fault_plaintext_ssn fault_single_region_key fault_flipped_bit
  fault_disabled_replica act_scoreboard
)
for act in "${acts[@]}"; do
  "$act"
done
step "done in $SECONDS s"
