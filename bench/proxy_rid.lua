-- The baseline for proxy_idem.lua: the same requests, made the same way
-- (a header made anew for each), but the header is X-Request-Id, which
-- the proxy ignores. Beside a static request (proxy.lua), wrk's making of
-- each request costs the machine's two cores enough to move every
-- process's CPU a request by some 6 %; this way the two targets differ
-- only in what the proxy does with an Idempotency-Key.
local counter = 0
local thread_id = 0
local threads = {}

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
		["X-Request-Id"] = "wrk-" .. thread_id .. "-" .. counter .. "-" .. os.time(),
	}, "content=hello+from+wrk")
end
