-- wrk script for benches/app: walks a list of requests, one per line of
-- BENCH_REQUESTS ("TOKEN PATH"), each wrk thread taking every Nth line.
--
-- BENCH_ONCE=1 (cold cache): every line is sent exactly once, so no request can
-- hit an entry an earlier request of the run filled. Otherwise the lines repeat
-- round-robin until the thread has sent BENCH_LIMIT/threads requests (warm
-- cache). Either way the run ends when the thread's last response is in (see
-- response()), never with requests in flight: a client dropping requests
-- half-way is a different workload, and on the server it cancels handlers.
-- done() prints one machine-readable line with req/s, percentiles and errors.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(os.getenv("BENCH_REQUESTS"), "r"))
  local n = tonumber(os.getenv("BENCH_THREADS") or "1")
  local lines = {}
  local i = 0
  for line in file:lines() do
    if i % n == id then
      local token, path = line:match("^(%S+)%s+(%S+)$")
      lines[#lines + 1] = wrk.format("GET", path, { Authorization = "Bearer " .. token })
    end
    i = i + 1
  end
  file:close()
  reqs = lines
  once = os.getenv("BENCH_ONCE") == "1"
  if once then
    limit = #lines
  else
    limit = math.ceil(tonumber(os.getenv("BENCH_LIMIT")) / n)
  end
  sent = 0
  pos = 0
  -- wrk 4 calls request() once in the first thread's state, right after
  -- init(), only to check the result parses; that call must not use up a line.
  verifying = id == 0
  answered = 0
  non2xx = 0
end

-- Sent on a connection that has nothing left to do: a request
-- whose header never ends, so the server waits for the rest and never answers,
-- and nothing of it reaches wrk's statistics. The run ends (stop + marker) when
-- the last real response is in, long before any header timeout.
local idle = "GET /bench-idle HTTP/1.1\r\nHost: localhost\r\n"

function request()
  if verifying then
    verifying = false
    return reqs[1]
  end
  if sent >= limit then
    return idle
  end
  sent = sent + 1
  pos = pos % #reqs + 1
  return reqs[pos]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  answered = answered + 1
  if answered >= limit and not finished then
    -- wrk's main thread sleeps for the whole -d; the driver script sends it
    -- SIGINT once every thread has left this marker, so the measured time
    -- ends with the last response.
    finished = true
    local f = io.open(os.getenv("BENCH_DONE_DIR") .. "/" .. id, "w")
    if f then f:close() end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + (tonumber(t:get("non2xx")) or 0)
  end
  local secs = summary.duration / 1e6
  io.write(string.format(
    "BENCH requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f non2xx=%d socket_errors=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
