#!/bin/sh
# Standalone migration step: wait for the database, then upgrade to head.
#   migrate.sh                    upgrade to head
#   migrate.sh REVISION           upgrade to REVISION
#   migrate.sh downgrade REV      roll back to REV (runs non-interactively: implies --yes)
# Exit codes: 0 done, 3 database unreachable, 4 migration lock timeout, 1 migration failed.
set -eu
if [ "${1:-}" = "downgrade" ]; then
    shift
    [ $# -ge 1 ] || { echo "usage: migrate.sh downgrade REVISION" >&2; exit 2; }
    exec lora-manager db downgrade --yes "$@"
fi
exec lora-manager db upgrade "${1:-head}"
