// The official `openai` npm package's realtime WebSocket client, unmodified,
// talking to tether. Run by the Go test TestNodeOpenAIClient (e2e/node_test.go),
// which starts tether (wss:// with a throwaway CA, the built-in mock upstream)
// and passes:
//
//   TETHER_BASE_URL      e.g. https://127.0.0.1:PORT/v1 (the client turns it into wss://.../v1/realtime)
//   NODE_EXTRA_CA_CERTS  the CA that signed tether's certificate
//
// Run alone: `npm ci && TETHER_BASE_URL=... NODE_EXTRA_CA_CERTS=... node --test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';

import { Recorder, STEP_MS } from './recorder.mjs';

const baseURL = process.env.TETHER_BASE_URL;

// 200 ms of 24 kHz pcm16, loud enough to be "speech"; the mock echoes
// committed audio back as the response's audio.
function testAudio(ms) {
  const b = Buffer.alloc(48 * ms);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7) & 0xff;
  return b;
}

async function open() {
  assert.ok(baseURL, 'TETHER_BASE_URL is not set (run through the Go test TestNodeOpenAIClient)');
  // apiKey: tether injects the upstream credential; whatever the client
  // sends is never forwarded.
  const client = new OpenAI({ apiKey: 'unused-tether-holds-the-key', baseURL });
  const rt = await OpenAIRealtimeWS.create(client, { model: 'gpt-realtime' });
  const s = new Recorder(rt, rt.socket);
  const created = await s.next('session.created');
  assert.equal(created.session.model, 'gpt-realtime');
  return s;
}

test('a voice turn through tether: session.update, append, commit, response with audio deltas, response.done', async () => {
  const s = await open();
  const { client: rt } = s;
  assert.match(rt.url.toString(), /^wss:\/\/127\.0\.0\.1:\d+\/v1\/realtime\?model=gpt-realtime$/);

  rt.send({ type: 'session.update', session: { type: 'realtime', instructions: 'Answer briefly.' } });
  const updated = await s.next('session.updated');
  assert.equal(updated.session.instructions, 'Answer briefly.');

  const audio = testAudio(200);
  rt.send({ type: 'input_audio_buffer.append', audio: audio.toString('base64') });
  rt.send({ type: 'input_audio_buffer.commit' });
  await s.next('input_audio_buffer.committed');

  rt.send({ type: 'response.create' });
  const created = await s.next('response.created');
  let got = 0;
  let deltas = 0;
  let done;
  while (!done) {
    const ev = await s.until('response.done', () => {
      if (s.cursor < s.events.length) return s.events[s.cursor++].ev;
      if (s.closed) throw new Error(`socket closed mid-response: ${JSON.stringify(s.closed)}`);
      return undefined;
    });
    if (ev.type === 'response.output_audio.delta') {
      assert.equal(ev.response_id, created.response.id);
      got += Buffer.from(ev.delta, 'base64').length;
      deltas++;
    } else if (ev.type === 'error') {
      assert.fail(`error event mid-response: ${JSON.stringify(ev)}`);
    } else if (ev.type === 'response.done') {
      done = ev;
    }
  }
  assert.equal(done.response.status, 'completed');
  assert.ok(deltas > 0, 'no audio deltas');
  assert.equal(got, audio.length, 'the mock echoes the committed audio: every byte must come back');
  assert.ok(done.response.usage.total_tokens > 0, 'response.done carries usage');
  assert.deepEqual(s.errors, []);

  rt.close({ code: 1000, reason: 'bye' });
  const closed = await s.closedWith();
  assert.equal(closed.code, 1000, 'tether echoes the client close code');
});

test('the upstream resets mid-response: the client sees close 1014 and no response.done', async () => {
  const s = await open();
  const { client: rt } = s;
  // Pace the mock's deltas so the response is still streaming when it resets.
  rt.send({ type: 'mock.fault', fault: 'slow', delta_interval_ms: 300 });
  rt.send({ type: 'input_audio_buffer.append', audio: testAudio(500).toString('base64') });
  rt.send({ type: 'input_audio_buffer.commit' });
  await s.next('input_audio_buffer.committed');
  rt.send({ type: 'response.create' });
  await s.next('response.created');
  await s.next('response.output_audio.delta');

  rt.send({ type: 'mock.fault', fault: 'rst' });
  const closed = await s.closedWith();
  assert.equal(closed.code, 1014, `close code ${closed.code} (${closed.reason}), want 1014 (bad gateway: upstream lost)`);
  assert.ok(!s.events.some(({ ev }) => ev.type === 'response.done'), 'a response.done arrived although the upstream reset mid-response');
});
