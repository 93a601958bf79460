#!/bin/sh
# API container entry point: wait for the database, upgrade the schema to head, then exec
# the server (one process: the server replaces this shell and receives signals directly).
# Set MIGRATE_ON_STARTUP=false where a migrate Job or init container already did the upgrade.
# Extra arguments go to `lora-manager serve` (e.g. --port 9000).
set -eu
exec lora-manager serve "$@"
