#!/usr/bin/env bash
# Check the installed node's config as systemd/edge.service will read it, by hand (after an edit, before an
# upgrade's restart): with the camera passwords of secrets.env in the environment and the broker password
# as the systemd credential `mqtt` (config: `password_file: ${CREDENTIALS_DIRECTORY}/mqtt`). A plain
# `edge check-config` outside the unit has neither and stops at the first ${NAME} it cannot fill.
#
#   sudo scripts/check-installed-config.sh [CONFIG]      # default /etc/edge/edge.yaml; exit as check-config's
#
# Run as root: both files are root-only. EDGE_ETC (default /etc/edge) and EDGE_BIN (default
# /opt/edge/.venv/bin/edge) name another install. secrets.env is read as systemd reads an EnvironmentFile:
# NAME=value lines, taken literally (no shell expansion: a password may hold $ or `), one pair of quotes
# around a value removed, blank lines and lines starting with # or ; skipped.
set -euo pipefail

etc="${EDGE_ETC:-/etc/edge}"
edge="${EDGE_BIN:-/opt/edge/.venv/bin/edge}"
config="${1:-$etc/edge.yaml}"

creds="$(mktemp -d)"
trap 'rm -rf "$creds"' EXIT
chmod 700 "$creds"
if [ -f "$etc/mqtt.pw" ]; then
    cp "$etc/mqtt.pw" "$creds/mqtt"
fi

if [ -f "$etc/secrets.env" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            '' | '#'* | ';'*) continue ;;
        esac
        name="${line%%=*}"
        value="${line#*=}"
        if [ "$name" = "$line" ] || ! [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
            echo "$etc/secrets.env: not a NAME=value line: ${line:0:40}" >&2
            exit 78
        fi
        if [[ "$value" =~ ^\"(.*)\"$ ]] || [[ "$value" =~ ^\'(.*)\'$ ]]; then
            value="${BASH_REMATCH[1]}"
        fi
        export "$name=$value"
    done < "$etc/secrets.env"
fi

rc=0
CREDENTIALS_DIRECTORY="$creds" "$edge" check-config "$config" || rc=$?
exit "$rc"
