#!/usr/bin/env bash
# Prepares this machine for tests/e2e/test_compose_up.py, from nothing, idempotently:
#
#   bash tests/compose/setup.sh packages   # apt: docker.io (dockerd) and debootstrap
#   bash tests/compose/setup.sh compose    # Compose v2 (Debian's docker-compose .deb, pinned
#                                          # and hash-checked) as ~/.docker/cli-plugins/docker-compose
#   bash tests/compose/setup.sh images     # stand-ins for the base images (needs a running dockerd)
#
# No image can be pulled here, so the images docker-compose.yml and Dockerfile.gpu name are
# built locally and tagged with those names: a Debian bookworm minbase made by debootstrap from
# the mirror apt uses, imported as trainhub-standin/bookworm:minbase; on it postgres:16
# (Debian's PostgreSQL 15: close, not the same), redis:7 (Debian's redis-server 7.0) and
# python:3.11-slim-bookworm (Debian's python3 with a venv first on PATH). This machine's CA
# bundle is copied into the python stand-in so that pip inside the image build can reach the
# package index; it never goes into the project's Dockerfile.
#
# Cached in $TRAINHUB_COMPOSE_CACHE (default ~/.cache/trainhub-compose-test): the debootstrap
# tarball and the Compose binary. Images already in dockerd are reused (the stand-in builds
# hit the build cache; the minbase is imported only when its tag is missing).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${TRAINHUB_COMPOSE_CACHE:-$HOME/.cache/trainhub-compose-test}
SUITE=bookworm
BASE_TAG=trainhub-standin/bookworm:minbase
# Compose v2 from Debian trixie (Debian bookworm has only Compose v1, which cannot read the
# Compose Spec). A static-enough Go binary: it needs libc6 >= 2.34, bookworm has 2.36.
COMPOSE_DEB=pool/main/d/docker-compose/docker-compose_2.26.1-4_amd64.deb
COMPOSE_SHA256=47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea
CA_BUNDLE=${TRAINHUB_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

log() { echo "[compose-setup] $*" >&2; }

# The Debian mirror apt uses for this suite (e.g. http://deb.debian.org/debian/).
mirror() {
    if [[ -n ${TRAINHUB_DEBIAN_MIRROR:-} ]]; then echo "${TRAINHUB_DEBIAN_MIRROR%/}/"; return; fi
    local uri
    uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' \
          | awk -v s="$SUITE" '$2 == s {print $1; exit}')
    [[ -n $uri ]] || { log "no apt source for $SUITE; set TRAINHUB_DEBIAN_MIRROR"; exit 1; }
    echo "$uri"
}

packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v curl >/dev/null || missing+=(curl)
    if ((${#missing[@]} == 0)); then log "packages: already installed"; return; fi
    log "packages: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# Prints the path of the docker-compose binary, installed as the docker CLI's plugin.
compose() {
    local dir="$CACHE/compose-${COMPOSE_SHA256:0:12}" plugin="$HOME/.docker/cli-plugins/docker-compose"
    if [[ ! -x $dir/docker-compose ]]; then
        local url tmp
        url="$(mirror)$COMPOSE_DEB"
        tmp=$(mktemp -d)
        log "compose: downloading $url"
        curl -fsSL --retry 3 -o "$tmp/compose.deb" "$url"
        echo "$COMPOSE_SHA256  $tmp/compose.deb" | sha256sum -c --quiet - >&2 \
            || { log "compose: sha256 mismatch for $url"; rm -rf "$tmp"; exit 1; }
        dpkg-deb -x "$tmp/compose.deb" "$tmp/root"
        mkdir -p "$dir"
        install -m 0755 "$tmp/root/usr/libexec/docker/cli-plugins/docker-compose" "$dir/docker-compose"
        rm -rf "$tmp"
    fi
    mkdir -p "$(dirname "$plugin")"
    if [[ "$(readlink "$plugin" 2>/dev/null)" != "$dir/docker-compose" ]]; then
        ln -sfn "$dir/docker-compose" "$plugin"
    fi
    log "compose: $("$dir/docker-compose" version)"
    echo "$dir/docker-compose"
}

build() {  # build TAG DOCKERFILE CONTEXT
    log "images: building $1"
    DOCKER_BUILDKIT=0 docker build -q --network host -t "$1" -f "$2" "$3" >&2
}

images() {
    docker info >/dev/null 2>&1 || { log "images: no dockerd answers"; exit 1; }
    if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
        local tarball="$CACHE/$SUITE-minbase.tar"
        if [[ ! -s $tarball ]]; then
            local root m
            m=$(mirror)
            root=$(mktemp -d)
            log "images: debootstrap --variant=minbase $SUITE from $m"
            debootstrap --variant=minbase "$SUITE" "$root" "$m" >"$CACHE/debootstrap.log" 2>&1 \
                || { tail -20 "$CACHE/debootstrap.log" >&2; rm -rf "$root"; exit 1; }
            rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
            mkdir -p "$CACHE"
            tar -C "$root" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
            rm -rf "$root"
        fi
        log "images: docker import $tarball as $BASE_TAG"
        docker import "$tarball" "$BASE_TAG" >/dev/null
    fi
    # The build context: the stand-in Dockerfiles' files and this machine's CA bundle.
    local ctx="$CACHE/context"
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp "$HERE"/standin-*.sh "$ctx"/
    cp "$CA_BUNDLE" "$ctx/ca-certificates.crt"
    build postgres:16 "$HERE/postgres.Dockerfile" "$ctx"
    build redis:7 "$HERE/redis.Dockerfile" "$ctx"
    build python:3.11-slim-bookworm "$HERE/python.Dockerfile" "$ctx"
}

mkdir -p "$CACHE"
case "${1:-}" in
    packages) packages ;;
    compose) compose ;;
    images) images ;;
    *) echo "usage: $0 packages|compose|images" >&2; exit 2 ;;
esac
