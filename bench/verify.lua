-- wrk script for bench/load.sh: GET /verify with `Authorization: Bearer <token>`, the
-- tokens read from a file (one a line) given as the first script argument, and each
-- thread walking the file from its own offset so that consecutive requests differ.
--
-- Non-200 answers are counted by status and X-Auth-Reason, and `done` prints one line
-- `RESULT key=value ...` that load.sh parses. Latencies are in microseconds.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  local path_prefix = args[2] or "/verify"
  local f = assert(io.open(path, "r"), "cannot open token file " .. tostring(path))
  tokens = {}
  for line in f:lines() do
    if #line > 0 then
      tokens[#tokens + 1] = line
    end
  end
  f:close()
  assert(#tokens > 0, "no tokens in " .. path)
  -- Spread the threads over the file: thread k starts k/threads of the way in.
  local nthreads = tonumber(args[3]) or 2
  idx = math.floor(#tokens * id / nthreads)
  target = path_prefix
  codes = {}
end

function request()
  idx = idx + 1
  if idx > #tokens then
    idx = 1
  end
  return wrk.format("GET", target, { ["Authorization"] = "Bearer " .. tokens[idx] })
end

function response(status, headers, body)
  if status ~= 200 then
    local reason = headers["x-auth-reason"] or headers["X-Auth-Reason"] or "-"
    local key = status .. ":" .. reason
    codes[key] = (codes[key] or 0) + 1
  end
end

function done(summary, latency, requests)
  local merged = {}
  local non200 = 0
  for _, thread in ipairs(threads) do
    local c = thread:get("codes") or {}
    for k, v in pairs(c) do
      merged[k] = (merged[k] or 0) + v
      non200 = non200 + v
    end
  end
  local parts = {}
  for k, v in pairs(merged) do
    parts[#parts + 1] = k .. "=" .. v
  end
  table.sort(parts)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d rps=%.0f p50_us=%d p99_us=%d non200=%d sockerr=%d codes=%s\n",
    summary.requests,
    summary.requests / secs,
    latency:percentile(50),
    latency:percentile(99),
    non200,
    e.connect + e.read + e.write + e.timeout,
    (#parts > 0) and table.concat(parts, ",") or "none"
  ))
end
