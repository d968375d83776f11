// Recorder keeps what an official client reported, for the tests: every
// event in order with its arrival time ({ev, at}), errors, the close, and
// waiters woken by each.
export const STEP_MS = 10_000;

export class Recorder {
  // client emits 'event' and 'error'; closer emits 'close' (code, reason).
  constructor(client, closer = client) {
    this.client = client;
    this.events = [];
    this.cursor = 0;
    this.errors = [];
    this.closed = null; // {code, reason, at} once the connection closed
    this.waiters = new Set();
    client.on('event', (ev) => {
      this.events.push({ ev, at: performance.now() });
      this.wake();
    });
    // Without an error listener the clients turn error events into
    // unhandled rejections; record them instead.
    client.on('error', (err) => {
      this.errors.push(err);
      this.wake();
    });
    closer.on('close', (code, reason) => {
      this.closed = { code, reason: String(reason ?? ''), at: performance.now() };
      this.wake();
    });
  }

  wake() {
    for (const w of this.waiters) w();
  }

  summary() {
    const counts = new Map();
    for (const { ev } of this.events) counts.set(ev.type, (counts.get(ev.type) ?? 0) + 1);
    return `events: ${JSON.stringify(Object.fromEntries(counts))}; errors: ${JSON.stringify(this.errors.map((e) => e.message))}; ` +
      `close: ${JSON.stringify(this.closed)}`;
  }

  // until resolves once cond() returns a value other than undefined.
  until(what, cond, timeoutMs = STEP_MS) {
    return new Promise((resolve, reject) => {
      const check = () => {
        let v;
        try {
          v = cond();
        } catch (err) {
          done();
          reject(err);
          return;
        }
        if (v !== undefined) {
          done();
          resolve(v);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${this.summary()}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  // next returns the next event of type typ after the cursor, skipping
  // others; an error event or a close fails.
  next(typ, timeoutMs) {
    return this.until(typ, () => {
      while (this.cursor < this.events.length) {
        const { ev } = this.events[this.cursor++];
        if (ev.type === typ) return ev;
        if (ev.type === 'error') throw new Error(`error event while waiting for ${typ}: ${JSON.stringify(ev)}`);
      }
      if (this.closed) throw new Error(`connection closed (${JSON.stringify(this.closed)}) while waiting for ${typ}; ${this.summary()}`);
      return undefined;
    }, timeoutMs);
  }

  closedWith(timeoutMs) {
    return this.until('the connection to close', () => this.closed ?? undefined, timeoutMs);
  }

  of(typ) {
    return this.events.filter(({ ev }) => ev.type === typ);
  }
}
