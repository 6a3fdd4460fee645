-- wrk script for scripts/serve_load.py: mixed embed / rerank traffic from a table of bodies
-- (BODIES: a Lua file the Python driver writes, `return { {path=..., body=...}, ... }`), counting
-- answers by status and 429/503 with and without Retry-After. HONOUR=1 makes the connection that
-- got a 429/503 wait Retry-After seconds before its next request (wrk's delay() runs per
-- connection, right after that connection's answer; the pending delay is handed to the next call).
local bodies = dofile(os.getenv("BODIES"))
local honour = os.getenv("HONOUR") == "1"
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
  no_retry_after = 0
  pending = 0
  math.randomseed(id * 7919 + os.time())
end

function request()
  local b = bodies[math.random(#bodies)]
  return wrk.format("POST", b.path, {["Content-Type"] = "application/json"}, b.body)
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if status == 429 or status == 503 then
    local ra = headers["retry-after"] or headers["Retry-After"]
    if ra == nil then
      no_retry_after = no_retry_after + 1
    elseif honour then
      pending = (tonumber(ra) or 1) * 1000
    end
  end
end

function delay()
  local d = pending
  pending = 0
  return d
end

function done(summary, latency, requests)
  local total = {}
  local nora = 0
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
    nora = nora + t:get("no_retry_after")
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, string.format('"%d": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us": %d, "requests": %d, "status": {%s}, "no_retry_after": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}, ' ..
    '"latency_p50_us": %d, "latency_p99_us": %d, "latency_max_us": %d}\n',
    summary.duration, summary.requests, table.concat(parts, ", "), nora,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
