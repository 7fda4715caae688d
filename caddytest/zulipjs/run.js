// Drives the official zulip-js client through the proxy with a scoped
// key, and prints what each call answered as one JSON object. The Go test
// (caddytest/zulipjs_test.go) starts the proxy and checks the results.
'use strict';

const zulip = require('zulip-js');

async function main() {
  const realm = process.env.ZWOP_REALM;
  const stream = process.env.ZWOP_STREAM;
  const other = process.env.ZWOP_OTHER_STREAM;
  const client = await zulip({ username: 'any-email@example.com', apiKey: process.env.ZWOP_KEY, realm });
  const out = {};
  out.send = await client.messages.send({ type: 'stream', to: stream, topic: 'zulip-js', content: 'hello from zulip-js' });
  out.update = await client.messages.update({ message_id: out.send.id, content: 'edited by zulip-js' });
  out.retrieve = await client.messages.retrieve({
    anchor: 'newest', num_before: 10, num_after: 0,
    narrow: [{ operator: 'stream', operand: stream }, { operator: 'topic', operand: 'zulip-js' }],
  });
  out.streamId = await client.streams.getStreamId(stream);
  out.topics = await client.streams.topics.retrieve({ stream_id: out.streamId.stream_id });
  out.me = await client.users.me.getProfile();
  out.server = await client.server.settings();
  out.forbiddenSend = await client.messages.send({ type: 'stream', to: other, topic: 'zulip-js', content: 'must not arrive' });
  out.forbiddenSubscribe = await client.users.me.subscriptions.add({ subscriptions: JSON.stringify([{ name: 'created-by-zulip-js' }]) });
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + '\n');
  process.exit(1);
});
