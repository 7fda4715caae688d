-- POST /send_message through the proxy with a new Idempotency-Key on
-- each request, as a bot that makes its writes idempotent does.
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
		["Idempotency-Key"] = "wrk-" .. thread_id .. "-" .. counter .. "-" .. os.time(),
	}, "content=hello+from+wrk")
end
