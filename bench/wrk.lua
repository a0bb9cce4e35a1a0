-- wrk script for bench/run.sh. BENCH_IF_NONE_MATCH (an ETag the server gave)
-- turns every request into a revalidation. done() prints one machine-readable
-- line that bench/measure.py parses.
local inm = os.getenv("BENCH_IF_NONE_MATCH")
if inm and inm ~= "" then
    wrk.headers["If-None-Match"] = inm
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
        summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
        e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
