#!/usr/bin/env bash
# Makes sure what the test suites need is installed and running on this machine:
# PostgreSQL and MariaDB reachable on loopback (trust / empty root password), and the tools
# git, rsync, zstd, GNU tar, pg_dump/pg_restore/psql, mysqldump/mysql, sqlite3 (the custom strategy
# example of docs/strategies.md), python3 with venv.
# Installs (apt-get) and starts what is missing when run as root; otherwise says what to do.
set -euo pipefail

log() { printf '[ensure-services] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    die "need root to run: $* (run this script as root, or install it yourself)"; fi
}

need_packages=()
want() { command -v "$1" >/dev/null 2>&1 || need_packages+=("$2"); }
want git git
want rsync rsync
want zstd zstd
want tar tar
want psql postgresql-client
want pg_dump postgresql-client
want pg_restore postgresql-client
want mysql mariadb-client
want mysqldump mariadb-client
want sqlite3 sqlite3
want python3 python3
[ -x /usr/lib/postgresql/*/bin/postgres ] 2>/dev/null || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_packages+=(postgresql)
[ -x /usr/sbin/mariadbd ] || need_packages+=(mariadb-server)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_packages+=(python3-venv)

if [ ${#need_packages[@]} -gt 0 ]; then
  mapfile -t unique < <(printf '%s\n' "${need_packages[@]}" | sort -u)
  log "installing: ${unique[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${unique[@]}"
fi

pg_ready() { psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; }
if ! pg_ready; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$version" ] || die "PostgreSQL is installed but has no cluster in /etc/postgresql"
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
  if ! pg_ready; then
    # A fresh Debian cluster asks for passwords on TCP: the tests use trust on loopback only.
    hba=/etc/postgresql/$version/main/pg_hba.conf
    if [ -f "$hba" ] && ! grep -q 'bitbucket-diy tests' "$hba"; then
      log "allowing trust authentication on 127.0.0.1 in $hba (test machine)"
      as_root sed -i '1i host all all 127.0.0.1/32 trust # bitbucket-diy tests\nhost all all ::1/128 trust # bitbucket-diy tests' "$hba"
      as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
      for _ in $(seq 1 15); do pg_ready && break; sleep 1; done
    fi
  fi
  pg_ready || die "PostgreSQL is not reachable on 127.0.0.1:5432 as user postgres"
fi
log "PostgreSQL ready on 127.0.0.1:5432"

my_ready() { mysql -h 127.0.0.1 -P 3306 -uroot -e 'select 1' >/dev/null 2>&1; }
if ! my_ready; then
  log "starting MariaDB"
  as_root install -d -o mysql -g mysql /run/mysqld 2>/dev/null || as_root mkdir -p /run/mysqld
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql 2>/dev/null || true
  for _ in $(seq 1 30); do my_ready && break; sleep 1; done
  if ! my_ready && as_root mysql -uroot -e 'select 1' >/dev/null 2>&1; then
    # A fresh Debian MariaDB lets root in by socket only; the tests log in over TCP, no password.
    log "allowing root without password on loopback (test machine)"
    as_root mysql -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;"
  fi
  my_ready || die "MariaDB is not reachable on 127.0.0.1:3306 as root without a password"
fi
log "MariaDB ready on 127.0.0.1:3306"

for tool in git rsync zstd tar pg_dump pg_restore mysqldump mysql sqlite3; do
  command -v "$tool" >/dev/null || die "$tool is still missing"
done
tar --version | head -n 1 | grep -q 'GNU tar' || die "tar is not GNU tar"
log "tools present: git rsync zstd tar pg_dump pg_restore mysqldump mysql sqlite3"
