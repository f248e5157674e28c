#!/usr/bin/env bash
# Creates the virtual environment from the exact pins and installs this package in editable mode.
# Idempotent: pip skips what is already installed. Pip's chatter goes to a log shown only on failure.
set -euo pipefail
venv="${1:-.venv}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
echo "setting up $venv (first time: several minutes, torch is large) ..."
if ! { "$venv/bin/python" -m pip install --disable-pip-version-check -q -r requirements-dev.txt \
       && "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps -e . ; } >"$log" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
  echo "error: setting up $venv failed (pip output above)" >&2
  exit 1
fi
echo "$venv ready"
