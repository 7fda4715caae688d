-- POST /api/v1/messages as the proxy sends it to Zulip: the same call
-- for reverse_proxy, respond and the upstream alone.
wrk.method = "POST"
wrk.path = "/api/v1/messages"
wrk.body = "type=stream&to=1&topic=bench&content=hello+from+wrk"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
-- demo-bot@zulip.example.com:demobotapikey0123456789abcdefghi
wrk.headers["Authorization"] = "Basic ZGVtby1ib3RAenVsaXAuZXhhbXBsZS5jb206ZGVtb2JvdGFwaWtleTAxMjM0NTY3ODlhYmNkZWZnaGk="
