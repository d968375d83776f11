// The official `openai` npm package's GPT-Live WebSocket client (LiveWS from
// openai/resources/live/ws, openai 7.x installed under the alias
// `openai-live`), unmodified, talking to tether over plain ws://. Run by the
// Go test TestNodeLiveClient (e2e/node_live_test.go), which starts tether
// with the built-in mock upstream and passes:
//
//   TETHER_PORT  tether's client port on 127.0.0.1 (the client dials
//                ws://127.0.0.1:PORT/v1/live/sessions from baseURL http://127.0.0.1:PORT/v1)
//
// Run alone: `npm ci && TETHER_PORT=8080 node --test live.test.mjs`.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import OpenAI from 'openai-live';
import { LiveWS } from 'openai-live/resources/live/ws';

import { Recorder, STEP_MS } from './recorder.mjs';

const port = process.env.TETHER_PORT;

// Audio: PCM16 LE mono 24 kHz (GPT-Live's default format), sent as 50 ms
// chunks in real time, the way a microphone would.
const RATE = 24_000;
const CHUNK_MS = 50;
const CHUNK_SAMPLES = (RATE * CHUNK_MS) / 1000; // 1,200 samples, 2,400 bytes
const TONE_HZ = 440;
const TONE_AMPLITUDE = 8_000;
// A delta whose loudest sample is above this is not silence (the tone peaks
// at TONE_AMPLITUDE; the mock's silence is digital zero).
const NON_SILENT = 1_000;
// The first call lasts this long from session.started: a second of tone,
// then silence.
const CALL_MS = 3_000;

// Mic is a real-time audio source: toneMs of a 440 Hz tone, then silence,
// for as long as it runs. It sends a chunk every 50 ms on a drift-free
// schedule while the socket is open.
class Mic {
  constructor(ws, toneMs) {
    this.ws = ws;
    this.toneChunks = Math.round(toneMs / CHUNK_MS);
    this.sent = 0;
    this.phase = 0;
    this.timer = null;
    this.t0 = 0;
  }

  chunk() {
    const b = Buffer.alloc(CHUNK_SAMPLES * 2);
    if (this.sent < this.toneChunks) {
      for (let i = 0; i < CHUNK_SAMPLES; i++) {
        const s = Math.round(TONE_AMPLITUDE * Math.sin(2 * Math.PI * TONE_HZ * (this.phase + i) / RATE));
        b.writeInt16LE(s, 2 * i);
      }
      this.phase += CHUNK_SAMPLES;
    }
    return b;
  }

  start() {
    this.t0 = performance.now();
    const tick = () => {
      // socket.readyState 1 = OPEN: a closed call stops the microphone.
      if (this.timer === null || this.ws.socket.readyState !== 1) {
        this.timer = null;
        return;
      }
      this.ws.send({ type: 'session.input_audio.append', audio: this.chunk().toString('base64') });
      this.sent++;
      const next = this.t0 + this.sent * CHUNK_MS;
      this.timer = setTimeout(tick, Math.max(0, next - performance.now()));
    };
    this.timer = setTimeout(tick, 0);
  }

  stop() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  get seconds() {
    return (this.sent * CHUNK_MS) / 1000;
  }
}

function peak(pcm) {
  let m = 0;
  for (let i = 0; i + 1 < pcm.length; i += 2) m = Math.max(m, Math.abs(pcm.readInt16LE(i)));
  return m;
}

// open dials tether with LiveWS, sends session.start on open and waits for
// session.started.
async function open(t) {
  assert.ok(port, 'TETHER_PORT is not set (run through the Go test TestNodeLiveClient)');
  // apiKey: tether holds the upstream credential; what the client sends is
  // never forwarded.
  const client = new OpenAI({ apiKey: 'placeholder', baseURL: `http://127.0.0.1:${port}/v1` });
  const ws = new LiveWS(client);
  const call = new Recorder(ws);
  // A failed test must not leave the socket open (node --test would wait for it).
  t.after(() => {
    if (!call.closed) ws.close({ code: 1000, reason: 'test over' });
  });
  assert.equal(ws.url.toString(), `ws://127.0.0.1:${port}/v1/live/sessions`, 'LiveWS dials plain ws:// with no query');
  ws.socket.on('open', () => {
    ws.send({ type: 'session.start', event_id: 'evt_start_node', session: { model: 'gpt-live-1' } });
  });
  const started = await call.next('session.started');
  call.startedAt = performance.now();
  assert.match(started.session.id, /^live_/, `session.started.session.id ${started.session.id}`);
  assert.equal(started.session.model, 'gpt-live-1');
  return { ws, call, started };
}

test('a GPT-Live call through tether: session.start, continuous audio both ways, session.close, session.closed, close 1000', async (t) => {
  const { ws, call, started } = await open(t);
  const mic = new Mic(ws, 1_000);
  mic.start();
  try {
    // The echo of the tone and a transcript of it, while the audio keeps
    // flowing both ways.
    const echo = await call.until('non-silent output audio and an output transcript delta', () => {
      const loud = call.of('session.output_audio.delta').find(({ ev }) => peak(Buffer.from(ev.delta, 'base64')) > NON_SILENT);
      const words = call.of('session.output_transcript.delta').find(({ ev }) => typeof ev.delta === 'string' && ev.delta.length > 0);
      for (const { ev } of call.events) {
        if (ev.type === 'error') throw new Error(`error event mid-call: ${JSON.stringify(ev)}`);
      }
      if (call.closed) throw new Error(`connection closed mid-call: ${call.summary()}`);
      return loud && words ? { loud, words } : undefined;
    }, 15_000);
    // Go on until CALL_MS into the call (silence once the tone is over), at
    // least a second past the echo: the output track must keep coming in
    // real time.
    const until = Math.max(call.startedAt + CALL_MS, performance.now() + 1_000);
    await new Promise((r) => setTimeout(r, until - performance.now()));
    assert.equal(call.closed, null, `connection closed mid-call: ${call.summary()}`);

    const deltas = call.of('session.output_audio.delta');
    const span = deltas.at(-1).at - deltas[0].at;
    let maxGap = 0;
    for (let i = 1; i < deltas.length; i++) maxGap = Math.max(maxGap, deltas[i].at - deltas[i - 1].at);
    const audioMs = deltas.reduce((n, { ev }) => n + Buffer.from(ev.delta, 'base64').length / 48, 0);
    console.log(`output: ${deltas.length} audio deltas (${audioMs.toFixed(0)} ms of audio) over ${span.toFixed(0)} ms, largest gap ${maxGap.toFixed(0)} ms; ` +
      `first non-silent delta ${(echo.loud.at - call.startedAt).toFixed(0)} ms after session.started, first output transcript delta ` +
      `${JSON.stringify(echo.words.ev.delta)} at ${(echo.words.at - call.startedAt).toFixed(0)} ms; input sent: ${mic.seconds} s`);
    assert.ok(span >= CALL_MS - 1_000, `output audio deltas spanned ${span.toFixed(0)} ms, want a continuous track over the call`);
    assert.ok(deltas.length >= 10, `${deltas.length} output audio deltas, want a continuous track`);
    assert.ok(maxGap < 1_000, `largest gap between output audio deltas ${maxGap.toFixed(0)} ms: the track is not continuous`);
    assert.ok(audioMs >= span * 0.5, `${audioMs.toFixed(0)} ms of output audio over ${span.toFixed(0)} ms: not a real-time track`);
  } finally {
    mic.stop();
  }

  ws.send({ type: 'session.close', event_id: 'evt_close_node' });
  const closed = await call.next('session.closed');
  assert.equal(closed.reason, 'close_requested');
  assert.ok(closed.usage && closed.usage.seconds > 0, `session.closed.usage ${JSON.stringify(closed.usage)}, want seconds > 0`);
  if (closed.session) assert.equal(closed.session.id, started.session.id);

  // The service closes the socket after session.closed; tether relays that.
  const end = await call.closedWith();
  assert.equal(end.code, 1000, `close code ${end.code} (${end.reason}) after session.closed, want 1000`);
  assert.deepEqual(call.errors.map((e) => e.message), [], 'no error during the call');
  console.log(`session.closed usage.seconds ${closed.usage.seconds}; socket closed ${(end.at - call.events.at(-1).at).toFixed(0)} ms after the last event, code ${end.code}`);
});

test('the upstream resets mid-call: the client sees close 1014 promptly, not a hang and not 1006', async (t) => {
  const { ws, call } = await open(t);
  const mic = new Mic(ws, 10_000);
  mic.start();
  try {
    // The call is under way: audio flows both ways.
    await call.until('3 output audio deltas', () => {
      if (call.closed) throw new Error(`connection closed before the reset: ${call.summary()}`);
      return call.of('session.output_audio.delta').length >= 3 ? true : undefined;
    });
    const sentAt = performance.now();
    // The mock drops its TCP connection to tether without a close frame.
    ws.send({ type: 'mock.fault', fault: 'rst' });
    const end = await call.closedWith(5_000);
    const after = end.at - sentAt;
    console.log(`close ${end.code} (${JSON.stringify(end.reason)}) ${after.toFixed(0)} ms after mock.fault rst; ${call.summary()}`);
    assert.notEqual(end.code, 1006, 'the connection was dropped without a close frame (1006)');
    assert.equal(end.code, 1014, `close code ${end.code} (${end.reason}), want 1014 (bad gateway: upstream lost)`);
    assert.ok(!call.of('session.closed').length, 'session.closed arrived although the upstream was reset');
  } finally {
    mic.stop();
  }
});
