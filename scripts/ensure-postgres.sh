#!/usr/bin/env bash
# PostgreSQL on Debian/Ubuntu (apt-get; root, or sudo for the steps that need it). Idempotent: safe to rerun.
#
#   scripts/ensure-postgres.sh
#       The server binaries only (Debian's `postgresql` package), installed if missing, without creating or
#       starting a cluster: nothing keeps running (what .ci/run does before the tests).
#   scripts/ensure-postgres.sh --cluster NAME --port PORT [--database NAME]
#       Also the cluster NAME of the newest installed PostgreSQL (Debian's pg_createcluster) listening on
#       127.0.0.1:PORT, created if missing and started if down (after a reboot without an init system too). With
#       --database: a login role of that name, its password asked twice (createuser --pwprompt), owning a database
#       of that name. An existing cluster, role or database is kept as it is. docs/operations.md's MLflow recipe.
set -euo pipefail

usage() {
  echo "usage: $0 [--cluster NAME --port PORT [--database NAME]]" >&2
  exit 2
}
cluster= port= database=
while (($#)); do
  case $1 in
    --cluster | --port | --database)
      (($# >= 2)) || usage
      declare "${1#--}=$2"
      shift 2
      ;;
    *) usage ;;
  esac
done
if [[ -n $database && -z $cluster ]] || [[ -n $cluster && -z $port ]] || [[ -n $port && -z $cluster ]]; then
  usage
fi
[[ -z $cluster || $cluster =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] || { echo "error: bad cluster name: $cluster" >&2; exit 2; }
[[ -z $port || ($port =~ ^[0-9]+$ && $port -ge 1024 && $port -le 65535) ]] ||
  { echo "error: --port must be a number from 1024 to 65535, not $port" >&2; exit 2; }
[[ -z $database || $database =~ ^[a-z_][a-z0-9_]*$ ]] ||
  { echo "error: --database must be a lowercase SQL identifier ([a-z_][a-z0-9_]*), not $database" >&2; exit 2; }

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

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  sudo=(sudo)
fi
need_root() {
  if ((${#sudo[@]})) && ! command -v sudo >/dev/null; then
    echo "error: $1 needs root (or sudo)" >&2
    exit 1
  fi
}

if ! have_postgres; then
  if ! command -v apt-get >/dev/null; then
    echo "error: initdb/pg_ctl not found and this is not a Debian-like system (no apt-get): install the" \
         "PostgreSQL server package with your package manager, then re-run" >&2
    exit 1
  fi
  need_root "installing PostgreSQL"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  # postgresql-common first, told not to create (and start) a `main` cluster when the server package installs
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends postgresql-common
  "${sudo[@]}" sed -ri 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends postgresql
  have_postgres || { echo "error: postgresql installed but initdb/pg_ctl still not found" >&2; exit 1; }
fi

[[ -n $cluster ]] || exit 0

for tool in pg_lsclusters pg_createcluster pg_ctlcluster; do
  command -v $tool >/dev/null || {
    echo "error: $tool not found: --cluster uses Debian's postgresql-common; elsewhere create a cluster with" \
         "initdb and start it with pg_ctl" >&2
    exit 1
  }
done
need_root "creating or starting a PostgreSQL cluster"
cd /  # the postgres user may not read the caller's folder
as_postgres=(runuser -u postgres --)
((${#sudo[@]})) && as_postgres=(sudo -u postgres)

# An existing cluster of this name (any version): pg_lsclusters -h prints "version name port status owner ..."
read -r version _ existing_port status _ < <(pg_lsclusters -h | awk -v name="$cluster" '$2 == name' | tail -1) || true
if [[ -n ${version:-} ]]; then
  if [[ $existing_port != "$port" ]]; then
    echo "error: the PostgreSQL cluster $version/$cluster listens on port $existing_port, not $port: pass" \
         "--port $existing_port, or another --cluster name" >&2
    exit 1
  fi
  if [[ $status != online* ]]; then
    "${sudo[@]}" pg_ctlcluster "$version" "$cluster" start
  fi
  echo "PostgreSQL cluster $version/$cluster: running on port $port"
else
  taken=$(pg_lsclusters -h | awk -v port="$port" '$3 == port {print $1 "/" $2}')
  if [[ -n $taken ]]; then
    echo "error: port $port belongs to the PostgreSQL cluster $taken: pass another --port" >&2
    exit 1
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "error: something already listens on 127.0.0.1:$port: pass another --port" >&2
    exit 1
  fi
  version=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | sort -V | tail -1)
  version=${version#/usr/lib/postgresql/} && version=${version%%/*}
  [[ -n $version ]] || { echo "error: no PostgreSQL server under /usr/lib/postgresql for pg_createcluster" >&2; exit 1; }
  "${sudo[@]}" pg_createcluster --port "$port" "$version" "$cluster"
  # 127.0.0.1 only (Debian's default, localhost, is ::1 too); in conf.d, as `pg_createcluster -o` would write the
  # address unquoted, which postgresql.conf cannot parse
  echo "listen_addresses = '127.0.0.1'" |
    "${sudo[@]}" tee "/etc/postgresql/$version/$cluster/conf.d/listen-loopback.conf" >/dev/null
  "${sudo[@]}" pg_ctlcluster "$version" "$cluster" start
  echo "PostgreSQL cluster $version/$cluster: created and started on 127.0.0.1:$port"
fi

[[ -n $database ]] || exit 0

# Over the cluster's Unix socket as its owner, `postgres` (Debian's `peer` authentication)
query() { "${as_postgres[@]}" psql -p "$port" -XtAc "$1" postgres; }
if [[ $(query "SELECT 1 FROM pg_roles WHERE rolname = '$database'") != 1 ]]; then
  echo "the role $database: choose its password (it goes into ~/.pgpass next)"
  "${as_postgres[@]}" createuser -p "$port" --pwprompt "$database"
fi
if [[ $(query "SELECT 1 FROM pg_database WHERE datname = '$database'") != 1 ]]; then
  "${as_postgres[@]}" createdb -p "$port" --owner "$database" "$database"
fi
echo "database $database (owner $database): postgresql://$database@127.0.0.1:$port/$database"
