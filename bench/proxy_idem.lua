-- POST /send_message through the proxy with a new Idempotency-Key on
-- each request, as a bot that makes its writes idempotent does. With
-- ZWOP_BENCH_HEADER=X-Request-Id (run.sh's proxy_rid targets) it is the
-- baseline: the same requests, made the same way, with a header the
-- proxy ignores. Beside a static request (proxy.lua), wrk's making of
-- each request costs the machine's two cores enough to move every
-- process's CPU a request by some 6 %; this way the two differ only in
-- what the proxy does with an Idempotency-Key.
local counter = 0
local thread_id = 0
local threads = {}
local header = os.getenv("ZWOP_BENCH_HEADER") or "Idempotency-Key"

function setup(thread)
	thread:set("id", #threads + 1)
	table.insert(threads, thread)
end

function init(args)
	thread_id = id
end

function request()
	counter = counter + 1
	return wrk.format("POST", "/send_message?topic=bench", {
		["Content-Type"] = "application/x-www-form-urlencoded",
		["X-API-key"] = os.getenv("ZWOP_BENCH_KEY"),
		[header] = "wrk-" .. thread_id .. "-" .. counter .. "-" .. os.time(),
	}, "content=hello+from+wrk")
end
