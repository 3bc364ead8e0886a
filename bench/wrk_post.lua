-- wrk script: POST the file named by $BODY_FILE as JSON to the URL given to wrk (a GET when
-- $BODY_FILE is empty or unset), and print the results as one JSON line ("WRK_JSON {...}")
-- for bench/http_bench.py.
local path = os.getenv("BODY_FILE")
if path and path ~= "" then
  local f = assert(io.open(path, "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local s = summary
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "stdev": %.1f, ' ..
    '"p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
    s.requests, s.duration, s.bytes,
    s.errors.connect, s.errors.read, s.errors.write, s.errors.status, s.errors.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
