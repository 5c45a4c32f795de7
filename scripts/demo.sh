#!/usr/bin/env bash
# Fresh machine -> the whole job on an embedded default: simulate a throw among distractors, detect it,
# print the alert and write events.jsonl, the annotated clip and the trajectory still under demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e .
.venv/bin/edge demo --out demo-out "$@"
