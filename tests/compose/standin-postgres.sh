#!/usr/bin/env bash
# Entrypoint of the postgres:16 stand-in (postgres.Dockerfile): on an empty data directory,
# initdb with POSTGRES_USER/POSTGRES_PASSWORD as the superuser and create POSTGRES_DB;
# POSTGRES_HOST_AUTH_METHOD (default scram-sha-256) for connections over the network, as the
# official image reads it (scripts/services.compose.yml sets trust for the test suite).
set -euo pipefail
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_PASSWORD:?the stand-in needs POSTGRES_PASSWORD}"
auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
if [[ ! -s $PGDATA/PG_VERSION ]]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --encoding=UTF8 --locale=C.UTF-8 --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host="$auth" -D "$PGDATA"
    rm -f "$pwfile"
    echo "host all all all $auth" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    if [[ $POSTGRES_DB != postgres ]]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" \
            | postgres --single -D "$PGDATA" -j postgres >/dev/null
    fi
    echo "stand-in postgres: initialised $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
fi
exec "$@"
