#!/usr/bin/env bash
# Builds the Python module into the repository's .venv and runs its pytest suite and a type check
# of the stubs. Called by tests/run-all.sh; needs nothing installed by hand beyond python3 (with
# venv) and the Rust toolchain. Fails on the first failure.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

log() { printf '[python-tests] %s\n' "$*" >&2; }
start=$(date +%s)

venv="$repo/.venv"
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
python="$venv/bin/python"
log "installing maturin, pytest and mypy into $venv"
"$python" -m pip install --quiet --disable-pip-version-check \
  'maturin>=1.9.4,<2' 'pytest>=8,<9' 'mypy>=1.10,<2'

# The docs' example strategy shells out to the sqlite3 tool (a tool bitbucket-diy does not ship).
if ! command -v sqlite3 >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    log "installing sqlite3 (used by the example strategy in docs/python.md)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q sqlite3 >/dev/null \
      || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q sqlite3 >/dev/null; }
  else
    log "ERROR: sqlite3 is missing: install it (apt-get install sqlite3) and run again"
    exit 1
  fi
fi

log "building the module (maturin develop)"
# The workspace's target folder: the core is compiled once for cargo test and maturin alike.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
(cd bitbucket-diy-py && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop --quiet)

log "pytest"
# The examples of docs/python.md are tested too (tests/test_docs.py extracts them).
"$python" -m pytest bitbucket-diy-py/tests -q -p no:cacheprovider

log "mypy --strict on the package and a typed usage example (checks the stubs)"
"$python" -m mypy --strict --no-incremental bitbucket-diy-py/python/bitbucket_diy bitbucket-diy-py/tests/typing_example.py

log "done in $(( $(date +%s) - start ))s"
