-- wrk script for CDS Hooks calls: a fixed JSON body and, with JWT auth, a fresh token per
-- request. Every token has its own jti (the service refuses replays), so tokens are minted
-- ahead of time by bench/http_bench.py (BENCH_TOKENS: one per line) and each wrk thread
-- takes a disjoint share of them, in order. Running out is counted (tokens_exhausted) and
-- the run is then invalid: the reused tokens are refused with 401.
--
-- Environment: BENCH_BODY (request file), BENCH_PATH (URL path), BENCH_TOKENS (optional),
-- BENCH_THREADS (wrk -t). Prints one line "JSON {...}" with the figures at the end.

local body_path = os.getenv("BENCH_BODY")
local url_path = os.getenv("BENCH_PATH")
local token_path = os.getenv("BENCH_TOKENS") or ""
local f = assert(io.open(body_path, "rb"))
local body = f:read("*a")
f:close()

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  tokens = {}
  if token_path ~= "" then
    local i = 0
    for line in io.lines(token_path) do
      if i % nthreads == (id - 1) then tokens[#tokens + 1] = line end
      i = i + 1
    end
  end
  next_token = 1
  exhausted = 0
  non2xx = 0
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  if #tokens > 0 then
    if next_token > #tokens then
      exhausted = exhausted + 1
      next_token = 1
    end
    headers["Authorization"] = "Bearer " .. tokens[next_token]
    next_token = next_token + 1
  end
  return wrk.format("POST", url_path, headers, body)
end

function response(status, hdrs, resp_body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  local exh, bad = 0, 0
  for _, t in ipairs(threads) do
    exh = exh + (t:get("exhausted") or 0)
    bad = bad + (t:get("non2xx") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_timeout":%d,"non2xx":%d,"tokens_exhausted":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, bad, exh,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean))
end
