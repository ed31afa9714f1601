-- wrk script for runtime/benches/chaos_proxy.rs: each thread stops after
-- WRK_REQUESTS_PER_THREAD responses, so a run is a fixed number of requests.
local n = 0
local limit = tonumber(os.getenv("WRK_REQUESTS_PER_THREAD") or "25000")

function response(status, headers, body)
  n = n + 1
  if n >= limit then
    wrk.thread:stop()
  end
end
