#!/usr/bin/env bash
# The reference scripts' restore (tar archive, rsync disk, postgresql database) into a new home
# and a new database. Environment: ARCHIVE TARGET_HOME TARGET_DB SCRATCH
set -euo pipefail
now() { date +%s.%N; }
phase() { printf 'phase %s %s\n' "$1" "$(echo "$(now) - $2" | bc)"; }
t=$(now)
mkdir -p "$SCRATCH" "$TARGET_HOME"
tar -xzf "$ARCHIVE" -C "$SCRATCH"
phase extract "$t"
t=$(now)
rsync -av -q "$SCRATCH/bitbucket-home/" "$TARGET_HOME/"
createdb -U postgres -h 127.0.0.1 "$TARGET_DB"
pg_restore -U postgres -h 127.0.0.1 -j 5 -Fd -d "$TARGET_DB" "$SCRATCH/bitbucket-db"
phase restore "$t"
