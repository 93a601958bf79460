#!/bin/sh
# Readiness probe: exit 0 only when /health/ready answers 200 (database up, schema at head).
# HEALTH_URL overrides the default http://127.0.0.1:$PORT/health/ready.
set -eu
exec lora-manager health --url "${HEALTH_URL:-http://127.0.0.1:${PORT:-8000}/health/ready}"
