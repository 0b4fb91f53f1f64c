-- wrk script for bench/ingest.sh: POSTs the file named by $BENCH_BODY as JSON, counts 2xx and
-- other answers per thread, and prints one machine-readable summary line at the end.
local body_file = os.getenv("BENCH_BODY")
local f = assert(io.open(body_file, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    ok = 0
    other = 0
end

function response(status, headers, body)
    if status >= 200 and status < 300 then
        ok = ok + 1
    else
        other = other + 1
    end
end

function done(summary, latency, requests)
    local n_ok, n_other = 0, 0
    for _, t in ipairs(threads) do
        n_ok = n_ok + t:get("ok")
        n_other = n_other + t:get("other")
    end
    io.write(string.format("BENCH requests=%d duration_us=%d p99_us=%d p50_us=%d ok=%d other=%d " ..
                           "socket_errors=%d\n",
                           summary.requests, summary.duration, latency:percentile(99),
                           latency:percentile(50), n_ok, n_other,
                           summary.errors.connect + summary.errors.read + summary.errors.write +
                           summary.errors.timeout))
end
