#!/usr/bin/env bash
# Make PostgreSQL's server binaries (initdb, pg_ctl) available for tests/test_remote_stores.py,
# which starts its own throwaway server on 127.0.0.1. Idempotent: does nothing when they are
# installed. Installs Debian's `postgresql` package (apt-get; root or sudo) without creating or
# starting the default cluster on port 5432: nothing keeps running after the install.
set -euo pipefail

have_postgres() {
  local bin
  for bin in /usr/lib/postgresql/*/bin; do
    if [[ -x $bin/initdb && -x $bin/pg_ctl ]]; then
      echo "PostgreSQL server binaries: $bin"
      return 0
    fi
  done
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    echo "PostgreSQL server binaries: $(dirname "$(command -v initdb)")"
    return 0
  fi
  return 1
}

have_postgres && exit 0

if ! command -v apt-get >/dev/null; then
  echo "error: initdb/pg_ctl not found and this is not a Debian-like system (no apt-get): install the" \
       "PostgreSQL server package with your package manager, then re-run" >&2
  exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "error: installing PostgreSQL needs root (or sudo)" >&2; exit 1; }
  sudo=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
# postgresql-common first, told not to create (and start) a `main` cluster when the server package installs
"${sudo[@]}" apt-get install -y -qq --no-install-recommends postgresql-common
"${sudo[@]}" sed -ri 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
  /etc/postgresql-common/createcluster.conf
"${sudo[@]}" apt-get install -y -qq --no-install-recommends postgresql

have_postgres || { echo "error: postgresql installed but initdb/pg_ctl still not found" >&2; exit 1; }
