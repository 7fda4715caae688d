-- POST /send_message through the proxy, as a bot does.
wrk.method = "POST"
wrk.path = "/send_message?topic=bench"
wrk.body = "content=hello+from+wrk"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["X-API-key"] = os.getenv("ZWOP_BENCH_KEY")
