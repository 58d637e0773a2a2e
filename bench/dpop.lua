-- wrk script for bench/dpop_load.sh: GET /verify as a forward-auth proxy would send it for
-- `GET http://shop.test/api/orders` (X-Forwarded-Proto/Host/Uri/Method), narrowed to the
-- tenant named by X-Keygate-Tenant. Script arguments:
--
--   bearer TOKEN_FILE TENANT             `Authorization: Bearer <token>` (the file's first line)
--   dpop TOKEN_FILE TENANT PROOFS NTHREADS
--                                        `Authorization: DPoP <token>` and `DPoP: <proof>`,
--                                        a proof never used twice: thread k of n takes proof
--                                        lines k+1, k+1+n, k+1+2n, ... of PROOFS
--
-- A proof is accepted once, so a thread that has used up its share sends the rest of its
-- requests without an Authorization header (keygate refuses them with 401) and counts them
-- as `exhausted`: the RESULT line then has codes `exhausted=N` next to those 401s, and
-- dpop_load.sh says the proof budget was too small.
--
-- Non-200 answers are counted by status and X-Auth-Reason, and `done` prints one line
-- `RESULT key=value ...` in verify.lua's format (plus exhausted=N). Latencies in microseconds.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local function first_line(path)
  local f = assert(io.open(path, "r"), "cannot open token file " .. tostring(path))
  local line = f:read("*l")
  f:close()
  assert(line and #line > 0, "no token in " .. path)
  return line
end

function init(args)
  mode = args[1]
  assert(mode == "bearer" or mode == "dpop", "first argument: bearer or dpop")
  local token = first_line(args[2])
  local tenant = args[3] or "bench"
  headers = {
    ["X-Keygate-Tenant"] = tenant,
    ["X-Forwarded-Proto"] = "http",
    ["X-Forwarded-Host"] = "shop.test",
    ["X-Forwarded-Uri"] = "/api/orders",
    ["X-Forwarded-Method"] = "GET",
  }
  proofs = {}
  if mode == "bearer" then
    headers["Authorization"] = "Bearer " .. token
    fixed = wrk.format("GET", "/verify", headers)
  else
    headers["Authorization"] = "DPoP " .. token
    local nthreads = tonumber(args[5]) or 2
    local f = assert(io.open(args[4], "r"), "cannot open proofs file " .. tostring(args[4]))
    local n = 0
    for line in f:lines() do
      if #line > 0 then
        if n % nthreads == id then
          proofs[#proofs + 1] = line
        end
        n = n + 1
      end
    end
    f:close()
    assert(#proofs > 0, "no proofs for thread " .. id .. " in " .. args[4])
    -- What a thread sends once its proofs are used up: no token at all, so never a 200.
    spent = wrk.format("GET", "/verify", {
      ["X-Keygate-Tenant"] = tenant,
      ["X-Forwarded-Proto"] = "http",
      ["X-Forwarded-Host"] = "shop.test",
      ["X-Forwarded-Uri"] = "/api/orders",
      ["X-Forwarded-Method"] = "GET",
    })
  end
  idx = 0
  exhausted = 0
  codes = {}
end

function request()
  if mode == "bearer" then
    return fixed
  end
  idx = idx + 1
  local proof = proofs[idx]
  if proof == nil then
    exhausted = exhausted + 1
    return spent
  end
  proofs[idx] = nil -- never again, and the memory goes
  headers["DPoP"] = proof
  return wrk.format("GET", "/verify", headers)
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
  local spent_total = 0
  for _, thread in ipairs(threads) do
    local c = thread:get("codes") or {}
    for k, v in pairs(c) do
      merged[k] = (merged[k] or 0) + v
      non200 = non200 + v
    end
    spent_total = spent_total + (thread:get("exhausted") or 0)
  end
  local parts = {}
  for k, v in pairs(merged) do
    parts[#parts + 1] = k .. "=" .. v
  end
  table.sort(parts)
  if spent_total > 0 then
    table.insert(parts, 1, "exhausted=" .. spent_total)
  end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d rps=%.0f p50_us=%d p99_us=%d non200=%d sockerr=%d codes=%s exhausted=%d\n",
    summary.requests,
    summary.requests / secs,
    latency:percentile(50),
    latency:percentile(99),
    non200,
    e.connect + e.read + e.write + e.timeout,
    (#parts > 0) and table.concat(parts, ",") or "none",
    spent_total
  ))
end
