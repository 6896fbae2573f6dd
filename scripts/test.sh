#!/usr/bin/env bash
# The whole test suite: installs what it needs (venv, test extras, Debian's chromium for
# the console browser tests, a headless Java 17 runtime for the Spark sweep test, the Node
# FHIR server for the prefetch tests), then pytest.
# PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) tests skip with a message when
# those servers are absent, except under CI=true where they must run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
      >/dev/null 2>&1 || echo "warning: could not install chromium; browser tests may skip"
  else
    echo "note: /usr/bin/chromium missing (apt-get install chromium) - browser tests skip"
  fi
fi
# PySpark (cds sweep --engine spark) needs Java 17 or later.
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      openjdk-17-jre-headless) >/dev/null 2>&1 \
      || echo "warning: could not install openjdk-17-jre-headless; the Spark test may skip"
  else
    echo "note: no Java 17+ (apt-get install openjdk-17-jre-headless) - the Spark test skips"
  fi
fi
if [ -f tests/fhirserver/package.json ] && command -v npm >/dev/null 2>&1; then
  if [ ! -d tests/fhirserver/node_modules ] || \
     [ tests/fhirserver/package-lock.json -nt tests/fhirserver/node_modules ]; then
    (cd tests/fhirserver && npm ci --silent --no-audit --no-fund) && \
      touch tests/fhirserver/node_modules
  fi
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
