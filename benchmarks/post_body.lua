-- wrk script of the API benchmark: every connection POSTs XML-RPC calls
-- carrying a real session, over and over on its keep-alive connection.
-- Arguments: the Content-Type, then one or more files of request bodies,
-- sent in turn (two that set different values make every write a real
-- change: writing a field's current value changes nothing).  At the end
-- it prints one JSON line with the figures the benchmark reads
-- (latencies in microseconds).
local requests = {}
local next_one = 0

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = args[1]
  for i = 2, #args do
    local f = assert(io.open(args[i], "rb"))
    wrk.body = f:read("*a")
    f:close()
    requests[#requests + 1] = wrk.format()
  end
end

function request()
  next_one = next_one % #requests + 1
  return requests[next_one]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"status_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0), latency.max))
end
