#!/usr/bin/env bash
# The local Aurora Global Database stand-in: two PostgreSQL 15 clusters on 127.0.0.1, a primary ("us-east-1") and
# a read-only hot standby ("ap-southeast-2") fed by physical streaming replication (pg_basebackup -R), so the
# secondary lags and refuses writes like an Aurora secondary.
#
#   pg.sh up [DIR]        create the clusters under DIR (default <repo>/.local-aws/pg) when missing, start them,
#                         print pg_primary=postgresql://… pg_replica=postgresql://… pg_passfile=… [pg_ca=…]
#   pg.sh down [DIR]      stop both clusters (fast shutdown)
#   pg.sh pause [DIR]     pause WAL replay on the standby (pg_wal_replay_pause): the secondary falls behind
#   pg.sh resume [DIR]    resume WAL replay (pg_wal_replay_resume)
#   pg.sh status [DIR]    exit 0 when both run (prints the connection strings), 3 when not
#   pg.sh run DIR PID     up, then stay in the foreground until process PID exits; then stop the clusters and
#                         delete DIR (the test harness's mode: every test process gets its own clusters)
#
# The application role is `app` (database `app`) with a password kept in DIR/pgpass, a PostgreSQL password file:
# point PGPASSFILE at it. The connection strings carry no password, as ddbguard's configuration must not.
# Ports: DDBGUARD_LOCAL_PG_PRIMARY_PORT / DDBGUARD_LOCAL_PG_REPLICA_PORT, free ports when unset.
#
# TLS: both clusters run with ssl = on, their certificate (for 127.0.0.1 and localhost) signed by a throwaway CA
# made with the openssl CLI when the clusters are created; `pg_ca=DIR/tls/ca.crt` is printed, for
# `?sslmode=verify-full&sslrootcert=…`. Clients that do not ask for TLS still connect (libpq's default `prefer`
# takes it when offered). DDBGUARD_LOCAL_PG_SSL=0 at creation: no TLS, no pg_ca.
#
# PostgreSQL refuses to run as root: as root every server command runs as the `postgres` system user (runuser),
# which owns DIR; DIR's parents must be traversable by it. As another user the servers run as that user.
# When the PostgreSQL 15 binaries are missing they are installed from Debian's packages, only as root in CI
# (CI=true), like scripts/local-aws installs python3-venv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${DDBGUARD_PG_BIN:-/usr/lib/postgresql/15/bin}"
password="ddbguard-local"

die() { echo "local-aws pg: $*" >&2; exit 1; }

ensure_installed() {
  [[ -x "$bin/postgres" ]] && return 0
  if [[ "$(id -u)" == 0 && "${CI:-}" == "true" ]] && command -v apt-get >/dev/null 2>&1; then
    echo "local-aws pg: PostgreSQL 15 is missing: installing postgresql-15" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >&2
  fi
  [[ -x "$bin/postgres" ]] || die "PostgreSQL 15 not found in $bin (Debian/Ubuntu: apt-get install postgresql-15)"
}

# Runs a command as the user that owns the clusters.
as_pg() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

tls_wanted() { [[ "${DDBGUARD_LOCAL_PG_SSL:-1}" != 0 ]]; }

# A CA and a server certificate signed by it (EC P-256: instant), in the primary's data directory, where
# PostgreSQL looks for server.crt and server.key by default and from where pg_basebackup copies them to the
# standby. The CA's key stays in DIR/tls; nothing here is a secret worth more than the throwaway clusters.
make_certs() {
  local root="$1" data="$1/primary/data" tls="$1/tls"
  command -v openssl >/dev/null 2>&1 || die "openssl not found: install it, or set DDBGUARD_LOCAL_PG_SSL=0"
  as_pg mkdir -p "$tls"
  printf '%s\n' "subjectAltName = IP:127.0.0.1, DNS:localhost" "basicConstraints = critical, CA:FALSE" \
    "keyUsage = critical, digitalSignature" "extendedKeyUsage = serverAuth" | as_pg tee "$tls/server.ext" >/dev/null
  {
    as_pg openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 30 \
      -subj "/CN=ddbguard local CA" -keyout "$tls/ca.key" -out "$tls/ca.crt" &&
      as_pg openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -subj "/CN=localhost" \
        -keyout "$data/server.key" -out "$tls/server.csr" &&
      as_pg openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
        -sha256 -days 30 -extfile "$tls/server.ext" -out "$data/server.crt"
  } >"$root/openssl.log" 2>&1 || { cat "$root/openssl.log" >&2; die "cannot make the TLS certificates"; }
  as_pg chmod 0600 "$data/server.key"
  echo "ssl = on" | as_pg tee -a "$data/postgresql.conf" >/dev/null
}

port_of() { cat "$1/port" 2>/dev/null || die "no cluster in $1 (run up first)"; }

running() { as_pg "$bin/pg_ctl" -D "$1/data" status >/dev/null 2>&1; }

start_cluster() {
  local dir="$1"
  running "$dir" && return 0
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "-p $(port_of "$dir")" start >/dev/null ||
    { tail -n 20 "$dir/server.log" >&2; die "cannot start the cluster in $dir"; }
}

psql_primary() {
  as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(port_of "$1/primary")" -U postgres -d postgres "${@:2}"
}

psql_replica() {
  as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(port_of "$1/replica")" -U postgres -d postgres "${@:2}"
}

create() {
  local root="$1"
  local pport="${DDBGUARD_LOCAL_PG_PRIMARY_PORT:-$(free_port)}"
  local rport="${DDBGUARD_LOCAL_PG_REPLICA_PORT:-$(free_port)}"
  mkdir -p "$root/primary" "$root/replica"
  [[ "$(id -u)" == 0 ]] && chown -R postgres: "$root"
  echo "$pport" | as_pg tee "$root/primary/port" >/dev/null
  echo "$rport" | as_pg tee "$root/replica/port" >/dev/null

  # Trust for the superuser and replication over loopback only (a throwaway local cluster); the application
  # role authenticates with SCRAM so that clients exercise the password file.
  as_pg "$bin/initdb" -D "$root/primary/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 --no-sync >"$root/initdb.log" 2>&1 || { cat "$root/initdb.log" >&2; die "initdb failed"; }
  as_pg tee -a "$root/primary/data/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 5
hot_standby = on
hot_standby_feedback = on
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
log_min_messages = warning
EOF
  if tls_wanted; then make_certs "$root"; fi
  as_pg tee "$root/primary/data/pg_hba.conf" >/dev/null <<EOF
host all         postgres 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
host all         all      127.0.0.1/32 scram-sha-256
EOF
  start_cluster "$root/primary"
  psql_primary "$root" <<SQL
CREATE ROLE app LOGIN PASSWORD '$password';
CREATE DATABASE app OWNER app;
SQL
  as_pg "$bin/pg_basebackup" -h 127.0.0.1 -p "$pport" -U postgres -D "$root/replica/data" -R -X stream -c fast \
    >"$root/basebackup.log" 2>&1 || { cat "$root/basebackup.log" >&2; die "pg_basebackup failed"; }
  start_cluster "$root/replica"
  {
    echo "127.0.0.1:$pport:*:app:$password"
    echo "127.0.0.1:$rport:*:app:$password"
  } | as_pg tee "$root/pgpass" >/dev/null
  as_pg chmod 0600 "$root/pgpass"
  # Readable by the invoking user too (tests and the demo pass it as PGPASSFILE).
  [[ "$(id -u)" == 0 ]] && chown root: "$root/pgpass"
  return 0
}

print_urls() {
  local root="$1"
  echo "pg_primary=postgresql://app@127.0.0.1:$(port_of "$root/primary")/app"
  echo "pg_replica=postgresql://app@127.0.0.1:$(port_of "$root/replica")/app"
  if [[ -f "$root/tls/ca.crt" ]]; then echo "pg_ca=$root/tls/ca.crt"; fi
  echo "pg_passfile=$root/pgpass"
}

cmd_up() {
  local root="$1"
  ensure_installed
  if [[ ! -f "$root/replica/data/standby.signal" ]]; then
    rm -rf "$root"
    create "$root"
  fi
  start_cluster "$root/primary"
  start_cluster "$root/replica"
  print_urls "$root"
}

cmd_down() {
  local root="$1" dir
  for dir in "$root/replica" "$root/primary"; do
    if [[ -d "$dir/data" ]] && running "$dir"; then
      as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
  done
}

cmd_status() {
  local root="$1"
  if [[ -d "$root/primary/data" && -d "$root/replica/data" ]] && running "$root/primary" && running "$root/replica"; then
    print_urls "$root"
    return 0
  fi
  echo "not running"
  return 3
}

cmd_run() {
  local root="$1" parent="$2"
  [[ "$parent" =~ ^[0-9]+$ ]] || die "run needs the parent pid"
  trap 'cmd_down "$root"; rm -rf "$root"' EXIT
  trap 'exit 0' TERM INT
  cmd_up "$root"
  while kill -0 "$parent" 2>/dev/null; do
    sleep 0.5
  done
}

cmd="${1:-}"
root="${2:-$repo/.local-aws/pg}"
case "$cmd" in
  up) cmd_up "$root" ;;
  down) cmd_down "$root" ;;
  pause) psql_replica "$root" -c 'SELECT pg_wal_replay_pause()' ;;
  resume) psql_replica "$root" -c 'SELECT pg_wal_replay_resume()' ;;
  status) cmd_status "$root" ;;
  run) cmd_run "$root" "${3:-}" ;;
  *)
    echo "usage: scripts/local-aws.d/pg.sh up|down|pause|resume|status [DIR] | run DIR PARENT_PID" >&2
    exit 2
    ;;
esac
