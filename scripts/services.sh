#!/usr/bin/env bash
# Start (installing if needed) the services the bus talks to: RabbitMQ and PostgreSQL. Idempotent:
# a running service is left alone. Prints the URLs the tests and the demo use.
set -euo pipefail

say() { printf '==> %s\n' "$*" >&2; }
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then $sudo apt-get update -qq; apt_updated=1; fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # wait_port PORT NAME SECONDS
  for _ in $(seq 1 "$3"); do port_open "$1" && return 0; sleep 1; done
  say "$2 did not open port $1 within $3 s"; return 1
}

# --- RabbitMQ (quorum queues need 3.8+) ---------------------------------------------------------
if ! port_open 5672; then
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
  say "starting RabbitMQ"
  $sudo rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_port 5672 RabbitMQ 90
fi
# Wait until the broker accepts work, not just connections (it opens the port before booting fully).
if command -v rabbitmqctl >/dev/null 2>&1; then
  for _ in $(seq 1 60); do $sudo rabbitmqctl -q await_startup >/dev/null 2>&1 && break; sleep 1; done
fi

# The management API (port 15672): `bus amqp-users` makes the AMQP agencies' broker users through it
# (docs/amqp-agencies.md). Enabling an enabled plugin changes nothing.
if ! port_open 15672; then
  say "enabling rabbitmq_management"
  $sudo rabbitmq-plugins enable rabbitmq_management >/dev/null
  wait_port 15672 "RabbitMQ management" 60
fi

# --- PostgreSQL ---------------------------------------------------------------------------------
if ! port_open 5432; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql
  fi
  say "starting PostgreSQL"
  for version in /etc/postgresql/*; do
    $sudo pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start 2>/dev/null || true
  done
  wait_port 5432 PostgreSQL 60
  # A fresh Debian cluster allows passwords over TCP: give postgres the one our URLs use.
  if command -v runuser >/dev/null 2>&1; then
    runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null 2>&1 || true
  fi
fi
# The benchmark counts statements per delivery from PostgreSQL's own statistics (bench/bench_e2e.py):
# pg_stat_statements must be preloaded, which takes one restart, once.
preload=$(PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -tAc "SHOW shared_preload_libraries" 2>/dev/null || true)
if [[ "$preload" != *pg_stat_statements* ]] && command -v pg_ctlcluster >/dev/null 2>&1; then
  say "PostgreSQL: preloading pg_stat_statements (one restart)"
  libraries="pg_stat_statements${preload:+,$preload}"
  PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -qc "ALTER SYSTEM SET shared_preload_libraries = '$libraries'" >/dev/null
  for version in /etc/postgresql/*; do
    $sudo pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main restart 2>/dev/null || true
  done
  wait_port 5432 PostgreSQL 60
fi
for db in bus bus_test; do
  if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" 2>/dev/null | grep -q 1; then
    PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $db" >/dev/null 2>&1 ||
      runuser -u postgres -- psql -qc "CREATE DATABASE $db" >/dev/null
  fi
done
say "RabbitMQ amqp://guest:guest@127.0.0.1:5672/  PostgreSQL postgresql://postgres@127.0.0.1:5432/bus_test"
