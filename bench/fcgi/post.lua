-- wrk script for the POST runs of bench/fcgi/run.sh: every request sends a
-- body of BENCH_POST_BYTES bytes; done() is bench/wrk.lua's (BENCH_WRK_LUA).
dofile(os.getenv("BENCH_WRK_LUA"))
wrk.method = "POST"
wrk.body = string.rep("x", tonumber(os.getenv("BENCH_POST_BYTES") or "1048576"))
wrk.headers["Content-Type"] = "application/octet-stream"
