// Official clients, unmodified, across a resume (lifecycle.resume): the
// upstream ends the call's session (the mock's `expire` fault: error
// session_expired, then close 1001) and tether carries the call over to a
// new upstream session without the client's socket closing. Each client
// must keep working: it gets tether's `tether.session.resumed` event
// (unknown to the SDKs) without an error, an answer cut short by the
// expiry ends with a `response.done` whose status is failed, and the next
// turns complete.
//
// Run by the Go test TestNodeResume (e2e/node_resume_test.go), which starts
// tether (wss:// with a throwaway CA, resume enabled, the mock upstream)
// and passes:
//
//   TETHER_BASE_URL      e.g. https://127.0.0.1:PORT/v1
//   NODE_EXTRA_CA_CERTS  the CA that signed tether's certificate
//
// Run alone: `npm ci && TETHER_BASE_URL=... NODE_EXTRA_CA_CERTS=... node --test resume.test.mjs`.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';
import { OpenAIRealtimeWebSocket, RealtimeAgent, RealtimeSession } from '@openai/agents-realtime';

import { Recorder, STEP_MS } from './recorder.mjs';

const baseURL = process.env.TETHER_BASE_URL;
const NOTICE = 'tether.session.resumed';
const APIKEY = 'unused-tether-holds-the-key'; // tether injects the upstream credential

// Rejections and exceptions nobody handled (the clients turn unhandled
// errors into rejections); every test asserts there were none.
const unhandled = [];
process.on('unhandledRejection', (err) => unhandled.push(err));
process.on('uncaughtException', (err) => unhandled.push(err));

// ms of 24 kHz pcm16, loud enough to be "speech"; the mock echoes
// committed audio back as the response's audio.
function testAudio(ms) {
  const b = Buffer.alloc(48 * ms);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7) & 0xff;
  return b;
}

// Types the client must not see while tether resumes: the expiry itself,
// the new upstream session's greeting, and its answers to the replay.
const REPLAY_LEAKS = ['error', 'session.created', 'session.updated', 'conversation.item.added', 'conversation.item.done'];

test('openai OpenAIRealtimeWS: voice turns before, across and after two resumes (one mid-answer)', async (t) => {
  assert.ok(baseURL, 'TETHER_BASE_URL is not set (run through the Go test TestNodeResume)');
  const client = new OpenAI({ apiKey: APIKEY, baseURL });
  const rt = await OpenAIRealtimeWS.create(client, { model: 'gpt-realtime' });
  t.after(() => rt.socket.terminate()); // a failed test leaves no call open
  const s = new Recorder(rt, rt.socket);
  // The client emits every event as 'event' and, unless it is an error,
  // under its own type too: the notice comes as both.
  const typed = [];
  rt.on(NOTICE, (ev) => typed.push(ev));
  await s.next('session.created');

  rt.send({
    type: 'session.update',
    session: {
      type: 'realtime',
      instructions: 'Answer briefly.',
      audio: { input: { transcription: { model: 'gpt-4o-transcribe' } } },
    },
  });
  const updated = await s.next('session.updated');
  assert.equal(updated.session.instructions, 'Answer briefly.');

  // voiceTurn appends ms of audio, commits it and asks for an answer; it
  // reads to the response.done and returns it with the audio bytes and the
  // input transcript the turn produced, and the index of its
  // input_audio_buffer.committed among the events.
  async function voiceTurn(ms) {
    const audio = testAudio(ms);
    rt.send({ type: 'input_audio_buffer.append', audio: audio.toString('base64') });
    rt.send({ type: 'input_audio_buffer.commit' });
    const committed = await s.next('input_audio_buffer.committed');
    const committedAt = s.cursor - 1;
    rt.send({ type: 'response.create' });
    const created = await s.next('response.created');
    let got = 0;
    let transcript;
    for (;;) {
      const ev = await s.until('response.done', () => {
        if (s.cursor < s.events.length) return s.events[s.cursor++].ev;
        if (s.closed) throw new Error(`socket closed mid-answer: ${JSON.stringify(s.closed)}`);
        return undefined;
      });
      if (ev.type === 'error') assert.fail(`error event mid-answer: ${JSON.stringify(ev)}`);
      if (ev.type === 'response.output_audio.delta') got += Buffer.from(ev.delta, 'base64').length;
      if (ev.type === 'response.done') {
        assert.equal(ev.response.id, created.response.id);
        transcript = s.events.slice(committedAt).map(({ ev }) => ev)
          .find((e) => e.type === 'conversation.item.input_audio_transcription.completed' && e.item_id === committed.item_id)?.transcript;
        return { done: ev, got, sent: audio.length, transcript, committedAt };
      }
    }
  }

  // awaitResume waits for the notice and checks the socket is open.
  async function awaitResume(resumes) {
    const notice = await s.next(NOTICE);
    assert.equal(notice.trigger, 'expired', `notice ${JSON.stringify(notice)}`);
    assert.equal(notice.resumes, resumes, `notice ${JSON.stringify(notice)}`);
    assert.equal(s.closed, null, 'the socket closed');
    assert.equal(rt.socket.readyState, rt.socket.OPEN);
    return notice;
  }
  // noLeaks checks nothing of the old or the new upstream session reached
  // the client between events from and to (the fault, and the next turn's
  // first answer).
  function noLeaks(from, to) {
    const leaked = s.events.slice(from, to).map(({ ev }) => ev.type).filter((t) => REPLAY_LEAKS.includes(t));
    assert.deepEqual(leaked, [], `the client saw these across the resume: ${s.summary()}`);
  }

  const t1 = await voiceTurn(300);
  assert.equal(t1.done.response.status, 'completed');
  assert.equal(t1.got, t1.sent, 'the mock echoes the committed audio');
  assert.ok(t1.transcript, 'no input transcript for the first turn');

  // The provider's cap between turns.
  let from = s.events.length;
  rt.send({ type: 'mock.fault', fault: 'expire' });
  await awaitResume(1);

  // The new upstream session has the call's settings: the turn completes
  // and its audio is transcribed (audio.input.transcription was replayed).
  const t2 = await voiceTurn(300);
  assert.equal(t2.done.response.status, 'completed');
  assert.equal(t2.got, t2.sent);
  assert.ok(t2.transcript, 'no input transcript after the resume: the session settings were not replayed');
  noLeaks(from, t2.committedAt);

  // The cap in the middle of an answer: tether finishes the answer for the
  // client with response.done status failed, then resumes.
  rt.send({ type: 'mock.fault', fault: 'slow', delta_interval_ms: 200 });
  rt.send({ type: 'input_audio_buffer.append', audio: testAudio(500).toString('base64') });
  rt.send({ type: 'input_audio_buffer.commit' });
  await s.next('input_audio_buffer.committed');
  rt.send({ type: 'response.create' });
  const cut = await s.next('response.created');
  await s.next('response.output_audio.delta');
  from = s.events.length;
  rt.send({ type: 'mock.fault', fault: 'expire' });
  const failed = await s.next('response.done');
  assert.equal(failed.response.id, cut.response.id);
  assert.equal(failed.response.status, 'failed', `response.done ${JSON.stringify(failed)}`);
  await awaitResume(2);

  const t3 = await voiceTurn(300);
  assert.equal(t3.done.response.status, 'completed');
  assert.equal(t3.got, t3.sent);
  noLeaks(from, t3.committedAt);

  assert.equal(typed.length, 2, 'the client emits the notice under its own type');
  assert.deepEqual(s.errors, [], 'the client emitted error');
  assert.equal(s.of('error').length, 0);
  assert.equal(s.of('session.created').length, 1, 'one session.created, from the first upstream session');
  assert.deepEqual(unhandled, []);

  rt.close({ code: 1000, reason: 'bye' });
  const closed = await s.closedWith();
  assert.equal(closed.code, 1000);
});

// waitFor polls cond until it returns a value other than undefined; a
// throwing cond (or guard) fails at once.
async function waitFor(what, cond, describe, guard = () => {}, timeoutMs = STEP_MS) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    guard(what);
    const v = cond();
    if (v !== undefined) return v;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${describe()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('Agents SDK RealtimeSession over OpenAIRealtimeWebSocket: turns before, across and after two resumes (one mid-answer)', async (t) => {
  assert.ok(baseURL, 'TETHER_BASE_URL is not set (run through the Go test TestNodeResume)');
  const url = `${baseURL.replace(/^http/, 'ws')}/realtime?model=gpt-realtime`;
  const agent = new RealtimeAgent({ name: 'Assistant', instructions: 'Answer briefly.' });
  const transport = new OpenAIRealtimeWebSocket({ url });
  const session = new RealtimeSession(agent, { transport, model: 'gpt-realtime' });
  t.after(() => session.close()); // a failed test leaves no call open

  const events = []; // every server event, raw (transport_event)
  const errors = [];
  const ends = []; // agent_end text outputs
  const states = []; // transport connection_change
  let audioChunks = 0;
  session.on('transport_event', (ev) => events.push(ev));
  session.on('error', (err) => errors.push(err));
  session.on('agent_end', (_ctx, _agent, text) => ends.push(text));
  session.on('audio', () => audioChunks++);
  transport.on('connection_change', (st) => states.push(st));
  const describe = () => {
    const counts = new Map();
    for (const ev of events) counts.set(ev.type, (counts.get(ev.type) ?? 0) + 1);
    return `events: ${JSON.stringify(Object.fromEntries(counts))}; agent_end: ${ends.length}; errors: ${JSON.stringify(errors.map((e) => (e?.error instanceof Error ? String(e.error) : e)))}; ` +
      `connection: ${JSON.stringify(states)}; history: ${JSON.stringify(session.history.map((i) => `${i.role}:${i.itemId}:${i.status}`))}`;
  };
  // An SDK error or a disconnect fails a wait at once.
  const guard = (what) => {
    if (errors.length > 0 || states.includes('disconnected')) throw new Error(`error or disconnect while waiting for ${what}; ${describe()}`);
  };
  const nth = (typ, n, pred = () => true) =>
    waitFor(`${typ} #${n}`, () => events.filter((ev) => ev.type === typ && pred(ev))[n - 1], describe, guard);

  await session.connect({ apiKey: APIKEY });
  assert.equal(transport.status, 'connected');
  await nth('session.created', 1);
  await nth('session.updated', 1, (ev) => ev.session.instructions === 'Answer briefly.');

  // turn sends a user message (conversation.item.create, then the SDK's
  // response.create) and waits for the answer's agent_end.
  async function turn(text, n) {
    const before = audioChunks;
    session.sendMessage(text);
    await waitFor(`agent_end #${n} (answer to "${text}")`, () => ends[n - 1], describe, guard);
    assert.ok(audioChunks > before, `no audio for "${text}"`);
    return ends[n - 1];
  }
  // awaitResume waits for the notice and checks the history the SDK keeps
  // did not change across it (tether keeps the new upstream session's
  // answers to its replay from the client).
  async function awaitResume(resumes, historyBefore) {
    const notice = await nth(NOTICE, resumes);
    assert.equal(notice.trigger, 'expired');
    assert.equal(notice.resumes, resumes);
    assert.equal(transport.status, 'connected', describe());
    assert.deepEqual(session.history.map((i) => i.itemId), historyBefore, `history changed across the resume: ${describe()}`);
  }

  const greeting = await turn('Hello?', 1);
  assert.equal(greeting, 'Hello from the mock upstream. Here is a short tone.');
  assert.equal(session.history.length, 2, describe());

  transport.sendEvent({ type: 'mock.fault', fault: 'expire' });
  await awaitResume(1, session.history.map((i) => i.itemId));
  await turn('Are you still there?', 2);
  assert.equal(session.history.length, 4, describe());

  // The cap mid-answer: the answer ends with tether's failed response.done,
  // which the SDK must take as the end of the response, or its
  // response.create sequencer waits forever and the next turn never starts.
  // (Its output is empty, so the cut answer's item stays in_progress in the
  // SDK's history: nothing ever reports it done.)
  transport.sendEvent({ type: 'mock.fault', fault: 'slow', delta_interval_ms: 200 });
  const before = audioChunks;
  session.sendMessage('Tell me a long story.');
  const cut = await nth('response.created', 3);
  await waitFor('audio of the third answer', () => (audioChunks > before ? true : undefined), describe, guard);
  transport.sendEvent({ type: 'mock.fault', fault: 'expire' });
  const failed = await nth('response.done', 3);
  assert.equal(failed.response.id, cut.response.id);
  assert.equal(failed.response.status, 'failed', JSON.stringify(failed));
  await waitFor('agent_end for the failed answer', () => ends[2], describe, guard);
  await awaitResume(2, session.history.map((i) => i.itemId));
  await turn('Where were we?', 4);

  const users = session.history.filter((i) => i.type === 'message' && i.role === 'user');
  const assistants = session.history.filter((i) => i.type === 'message' && i.role === 'assistant');
  assert.deepEqual(users.map((i) => i.content.map((c) => c.text).join('')),
    ['Hello?', 'Are you still there?', 'Tell me a long story.', 'Where were we?'], describe());
  assert.equal(assistants.length, 4, describe());
  assert.equal(session.history.length, 8, describe());
  assert.equal(new Set(session.history.map((i) => i.itemId)).size, 8, `duplicate item ids: ${describe()}`);

  assert.deepEqual(errors, [], `the session emitted error: ${describe()}`);
  assert.equal(events.filter((ev) => ev.type === 'session.created').length, 1, describe());
  assert.ok(!states.includes('disconnected'), `the transport disconnected: ${describe()}`);
  assert.deepEqual(unhandled, []);
});
