#!/usr/bin/env bash
# Fresh machine -> everything the tests need (Debian packages, virtualenv), then lint and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Three workers on two cores: most tests wait on brokers, streams and child processes, not the CPU (measured:
# 158% CPU, 10 min against 24 serially); a file's tests stay on one worker, sharing its module fixtures.
exec .venv/bin/python -m pytest -q -n "${EDGE_TEST_WORKERS:-3}" --dist loadfile "$@"
