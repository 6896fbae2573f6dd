#!/usr/bin/env bash
# Run the service on http://127.0.0.1:8000 with the embedded SQLite store (./cds.db) and
# every pack under rules/. Without CDS_TRUSTED_ISSUERS this starts in DEVELOPMENT MODE
# (CDS_AUTH=off, JWT checks disabled), and says so loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if [ -z "${CDS_AUTH:-}" ] && [ -z "${CDS_TRUSTED_ISSUERS:-}" ]; then
  export CDS_AUTH=off
fi
exec .venv/bin/cds serve "$@"
