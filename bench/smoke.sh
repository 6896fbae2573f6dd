#!/usr/bin/env bash
# A short run of every benchmark so they never rot (CI: called by .ci/run). Installs what
# it needs (the venv, and wrk from Debian when root; without wrk the Python load generator
# is used), talks only to 127.0.0.1, writes its figures to a temporary folder (the report's
# figures in bench/results/ are from the full runs in bench/README.md). ~2 minutes.
# Fails on: any error answer in the soak, engine memory growth, a benchmark that crashes,
# and an accounting that lost a stage or covers less than 90% of the server's CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test >/dev/null
if ! command -v wrk >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) \
    >/dev/null 2>&1 || echo "bench smoke: could not install wrk; using the Python load generator"
fi
PY=.venv/bin/python
export PYTHONPATH="$PWD"
out="$(mktemp -d -t cds-bench-smoke-XXXXXX)"
trap 'rm -rf "$out"' EXIT
dbs="sqlite"
if $PY -c "import psycopg; psycopg.connect('postgresql://postgres@127.0.0.1:5432/postgres', connect_timeout=3).close()" 2>/dev/null; then
  dbs="sqlite,postgresql"
elif [ "${CI:-}" = "true" ]; then
  echo "bench smoke: PostgreSQL at 127.0.0.1:5432 is required under CI=true" >&2; exit 1
fi
step() { echo; echo "== bench smoke: $*"; }
t0=$SECONDS
step "request mix";        $PY bench/gen_requests.py
step "stage profile";      $PY -m bench.profile_stages -n 15 --profile-n 15 --out "$out" | grep -v '^!!\|^$'
step "sweep (1,000 patients, DuckDB + pool)"; $PY -m bench.sweep_bench --patients 1000 --engines duckdb --cache "$out/sweep" --max-seconds 300 | tail -1
step "engine scale";       $PY -m bench.engine_scale -n 5000 --max-growth 5 --out "$out" | tail -1
step "HTTP (ours vs bare)"
$PY -m bench.http_bench --duration 2 --warmup 1 --db "$dbs" --workers 1 --auth off,jwt \
  --conns 16 --kind-workers "" --scale-workers "" --out "$out/http.json" | grep -v '^{'
step "CPU accounting per stage (real uvicorn)"
$PY -m bench.account --duration 2 --warmup 1 --db sqlite --auth off,jwt --conns 16 --no-bare \
  --check --out "$out/account.json" | grep -v '^{'
if [[ "$dbs" == *postgresql* ]]; then
  step "workers and every process's CPU (PostgreSQL)"
  $PY -m bench.scaling --workers 1,2 --conns 16 --duration 2 --out "$out/scaling.json" | tail -4
fi
# The soak runs on PostgreSQL (the production store) when it is there: on SQLite, 16
# concurrent writers in one process starve on the file lock and a few calls get 503 (the
# finding and its fix are in bench/README.md).
soak_db=sqlite; case "$dbs" in *postgresql*) soak_db=postgresql;; esac
step "soak 30 s ($soak_db)"; $PY -m bench.soak --seconds 30 --db "$soak_db" --max-rss-growth 25 --out "$out"
step "medication list scale"; $PY -m bench.medlist_scale --sizes 10,100,1000 --repeat 1 --out "$out/medlist.json" | tail -5
step "sign-in flood";      $PY -m bench.signin_flood --duration 3 --conns 16 --configs defaults,separate-port --out "$out/flood.json" | tail -6
echo; echo "bench smoke: OK in $((SECONDS - t0)) s"
