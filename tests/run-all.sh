#!/usr/bin/env bash
# Runs every test suite of the workspace. On a fresh Debian machine with Rust installed this is
# the only command needed: it installs and starts what the tests use (as root), then runs the
# Rust suites (unit, integration, end-to-end, doctests) and the Python module's pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/ensure-services.sh

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
echo "== cargo test --workspace"
cargo test --workspace --locked --no-fail-fast

if [ -f bitbucket-diy-py/pyproject.toml ]; then
  echo "== Python module: build into .venv and run pytest"
  bash bitbucket-diy-py/run-tests.sh
fi
echo "== all test suites passed"
