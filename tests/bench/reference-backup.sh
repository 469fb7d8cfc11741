#!/usr/bin/env bash
# The vendor's reference approach, built from the same tools and flags its scripts use
# (atlassian-bitbucket-diy-backup: rsync disk strategy, postgresql database strategy, tar
# archive), against the simulator. Not a product feature: the benchmark's baseline.
#
# Environment: BB_URL BB_USER BB_PASS HOME_DIR BACKUP_ROOT ARCHIVE_ROOT DB_NAME ARCHIVE_NAME
# Prints `phase <name> <seconds>` lines for the benchmark to read.
set -euo pipefail

now() { date +%s.%N; }
phase() { printf 'phase %s %s\n' "$1" "$(echo "$(now) - $2" | bc)"; }
curl_bb() { curl -s -f -u "$BB_USER:$BB_PASS" -H 'Accept: application/json' -H 'Content-type: application/json' "$@"; }

# The article's exclude list (the long list; repo excludes unused).
EXCLUDES=(--exclude=/caches/ --exclude=/data/db.* --exclude=/shared/data/db.* --exclude=/export/ --exclude=/log/
          --exclude=/plugins/.*/ --exclude=/tmp --exclude=/.lock --exclude=/shared/.lock --exclude=/shared/export/
          --exclude=/search/data/ --exclude=/shared/search/data/)
mkdir -p "$BACKUP_ROOT/bitbucket-home" "$BACKUP_ROOT/bitbucket-db" "$ARCHIVE_ROOT"

t=$(now)
# prepare_backup_disk: the first rsync pass while Bitbucket runs (postgresql has no prepare step).
rsync -avh -q --delete --delete-excluded "${EXCLUDES[@]}" "$HOME_DIR/" "$BACKUP_ROOT/bitbucket-home/"
phase prepare "$t"

t_lock=$(now)
unlock_token=$(curl_bb -X POST "$BB_URL/mvc/maintenance/lock" | jq -r .unlockToken)
curl_bb -X POST -H "X-Atlassian-Maintenance-Token: $unlock_token" "$BB_URL/mvc/admin/backups?external=true" >/dev/null
# The scripts poll with no delay until both states read DRAINED.
while :; do
  state=$(curl_bb -H "X-Atlassian-Maintenance-Token: $unlock_token" "$BB_URL/mvc/maintenance")
  [ "$(jq -r '.["db-state"] + "_" + .["scm-state"]' <<<"$state")" = DRAINED_DRAINED ] && break
done
phase drain "$t_lock"

t=$(now)
progress() { curl_bb -X POST "$BB_URL/mvc/admin/backups/progress/client?token=$unlock_token&percentage=$1" >/dev/null; }
(
  rm -rf "$BACKUP_ROOT/bitbucket-db"
  pg_dump -U postgres -h 127.0.0.1 --port 5432 -j 5 -Fd -d "$DB_NAME" -f "$BACKUP_ROOT/bitbucket-db"
  progress 50
) &
db_job=$!
(
  rsync -avh -q --delete --delete-excluded "${EXCLUDES[@]}" "$HOME_DIR/" "$BACKUP_ROOT/bitbucket-home/"
  progress 50
) &
disk_job=$!
wait "$db_job"
wait "$disk_job"
phase consistent "$t"
progress 100
curl_bb -X DELETE "$BB_URL/mvc/maintenance/lock?token=$unlock_token" >/dev/null
phase locked "$t_lock"

t=$(now)
tar -czf "$ARCHIVE_ROOT/$ARCHIVE_NAME.tar.gz" -C "$BACKUP_ROOT" .
phase archive "$t"
