#!/usr/bin/env bash
# Installs what building and testing pg_attribution needs: Postgres server and headers,
# clang for bindgen, sudo for pgrx's --runas, cargo-pgrx, and pgrx's Postgres registry.
# Idempotent: each step is skipped when already done.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need_apt=()
for pkg in "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" libclang-dev clang sudo; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]}"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
    log "installing cargo-pgrx $PGRX_VERSION (a few minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

if ! grep -qs "pg$PG_MAJOR" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    log "registering Postgres $PG_MAJOR with pgrx"
    cargo pgrx init "--pg$PG_MAJOR" "$PG_CONFIG"
fi
