#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis that the test suite (and distributed mode) talk to
# answer, starting them if they are down. In order, for each:
#   1. already answering on its address: nothing to do;
#   2. this machine's own service (a Debian cluster via pg_ctlcluster; redis-server);
#   3. Docker: the compose file's `postgres` and `redis` services, published on loopback
#      (project trainhub-services, scripts/services.compose.yml);
#   4. root with apt-get: Debian's postgresql / redis-server packages, then as in 2;
#   5. otherwise: one line saying what to install, and exit 1.
# Addresses: TRAINHUB_TEST_PG (default postgresql://postgres@127.0.0.1:5432/postgres) and
# TRAINHUB_TEST_REDIS (default redis://127.0.0.1:6379), as tests/conftest.py reads them.
# TRAINHUB_SERVICES_VIA=docker|apt|none skips straight to that way (none: only check).
set -euo pipefail
cd "$(dirname "$0")/.."

pg_url=${TRAINHUB_TEST_PG:-postgresql://postgres@127.0.0.1:5432/postgres}
redis_url=${TRAINHUB_TEST_REDIS:-redis://127.0.0.1:6379}
via=${TRAINHUB_SERVICES_VIA:-}

# host and port of a URL such as scheme://user@host:port/db
host_of() { local rest=${1#*://}; rest=${rest#*@}; rest=${rest%%/*}; echo "${rest%%:*}"; }
port_of() { local rest=${1#*://}; rest=${rest#*@}; rest=${rest%%/*}; [[ $rest == *:* ]] && echo "${rest##*:}" || echo "$2"; }

pg_host=$(host_of "$pg_url"); pg_port=$(port_of "$pg_url" 5432)
redis_host=$(host_of "$redis_url"); redis_port=$(port_of "$redis_url" 6379)

# A TCP connect, with bash alone: it must work on a machine with neither client installed.
answers() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_for() {  # name host port
  for _ in $(seq 60); do answers "$2" "$3" && return 0; sleep 1; done
  echo "error: $1 was started but does not answer on $2:$3 after 60 s" >&2
  exit 1
}

is_local() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 ]]; }

start_native_pg() {
  command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]] \
    && [[ -n $(ls /etc/postgresql 2>/dev/null) ]] || return 1
  echo "starting PostgreSQL (pg_ctlcluster)"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
}

start_native_redis() {
  command -v redis-server >/dev/null || return 1
  echo "starting Redis (redis-server)"
  local dir=/var/lib/redis log=/var/log/redis/trainhub-$redis_port.log
  mkdir -p "$dir" "$(dirname "$log")" 2>/dev/null && [[ -w $dir ]] \
    || { dir=/tmp/trainhub-redis; log=$dir/redis.log; mkdir -p "$dir"; }
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$redis_port" --save "" \
    --appendonly no --dir "$dir" --logfile "$log"
}

docker_ready() { command -v docker >/dev/null && docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; }

start_docker() {  # service
  docker_ready || return 1
  echo "starting $1 with Docker (docker compose -p trainhub-services up -d --wait $1)"
  # --wait: until its healthcheck passes. Docker's port proxy accepts connections as soon
  # as the container starts, long before the server inside answers.
  PG_PORT=$pg_port REDIS_PORT=$redis_port docker compose -p trainhub-services \
    -f docker-compose.yml -f scripts/services.compose.yml up -d --wait --wait-timeout 180 "$1"
}

install_apt() {  # packages...
  [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null || return 1
  echo "installing $* with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

trust_local_pg() {
  # The suite connects as `postgres` without a password, as on a developer's machine with
  # trust auth on loopback; a fresh Debian install asks for one over TCP.
  local hba
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf | sort -V | tail -1)
  grep -q '^host all all 127.0.0.1/32 trust' "$hba" && return 0
  echo "pg_hba.conf: trusting loopback connections ($hba)"
  sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
}

apt_pg() { install_apt postgresql && trust_local_pg && start_native_pg; }
apt_redis() { install_apt redis-server && start_native_redis; }

ensure() {  # name host port setting-to-point-elsewhere native docker-service apt-way packages
  local name=$1 host=$2 port=$3 setting=$4 native=$5 service=$6 apt_way=$7 packages=$8
  if answers "$host" "$port"; then echo "$name: answers on $host:$port"; return 0; fi
  if ! is_local "$host"; then
    echo "error: $name does not answer on $host:$port (not this machine: start it there)" >&2
    exit 1
  fi
  case $via in
    "") $native || start_docker "$service" || $apt_way ;;
    docker) start_docker "$service" ;;
    apt) $apt_way ;;
    *) false ;;
  esac || {
    echo "error: $name does not answer on $host:$port and none can be started here: install $name (Debian: apt install $packages) or Docker with Compose v2, or set $setting to one that runs" >&2
    exit 1
  }
  wait_for "$name" "$host" "$port"
  echo "$name: answers on $host:$port"
}

ensure PostgreSQL "$pg_host" "$pg_port" TRAINHUB_TEST_PG start_native_pg postgres apt_pg postgresql
ensure Redis "$redis_host" "$redis_port" TRAINHUB_TEST_REDIS start_native_redis redis apt_redis redis-server
