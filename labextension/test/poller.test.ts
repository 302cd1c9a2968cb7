import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { Poller, TickResult, nextDelay } from '../src/poller';

const opts = { interval: 1000, maxIdle: 2000, maxError: 30000, idleFactor: 1.25, errorFactor: 2 };

test('unchanged answers back off to maxIdle, a change snaps back', () => {
  let s = { delay: 1000, errors: 0 };
  const seen: number[] = [];
  for (let i = 0; i < 6; i++) {
    s = nextDelay(s, 'unchanged', opts);
    seen.push(s.delay);
  }
  assert.deepEqual(seen, [1250, 1562.5, 1953.125, 2000, 2000, 2000]);
  s = nextDelay(s, 'changed', opts);
  assert.deepEqual(s, { delay: 1000, errors: 0 });
});

test('errors back off exponentially to maxError and reset on success', () => {
  let s = { delay: 1000, errors: 0 };
  const seen: number[] = [];
  for (let i = 0; i < 7; i++) {
    s = nextDelay(s, 'error', opts);
    seen.push(s.delay);
  }
  assert.deepEqual(seen, [2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(s.errors, 7);
  s = nextDelay(s, 'unchanged', opts);
  assert.equal(s.errors, 0);
  assert.equal(s.delay, 2000);
});

/** A fake clock: timers run only when the test advances time. */
function fakeTimers() {
  let now = 0;
  let seq = 0;
  const timers = new Map<number, { at: number; fn: () => void }>();
  return {
    setTimer: (fn: () => void, ms: number) => {
      const id = ++seq;
      timers.set(id, { at: now + ms, fn });
      return id;
    },
    clearTimer: (id: unknown) => {
      timers.delete(id as number);
    },
    pending: () => [...timers.values()].map(t => t.at - now),
    async advance(ms: number) {
      now += ms;
      for (const [id, t] of [...timers.entries()]) {
        if (t.at <= now) {
          timers.delete(id);
          t.fn();
        }
      }
      // let the tick's promise chain settle
      for (let i = 0; i < 10; i++) {
        await Promise.resolve();
      }
    }
  };
}

async function settle() {
  for (let i = 0; i < 10; i++) {
    await Promise.resolve();
  }
}

test('the poller ticks at once on start, stands by when stopped, and resumes', async () => {
  const clock = fakeTimers();
  const results: TickResult[] = ['changed', 'unchanged', 'unchanged', 'error', 'changed'];
  let calls = 0;
  const p = new Poller(async () => results[Math.min(calls++, results.length - 1)], clock);
  p.start();
  await settle();
  assert.equal(calls, 1);
  assert.deepEqual(clock.pending(), [1000]);
  await clock.advance(1000);
  assert.equal(calls, 2);
  assert.deepEqual(clock.pending(), [1250]);
  p.stop();
  assert.deepEqual(clock.pending(), []);
  await clock.advance(60000);
  assert.equal(calls, 2, 'no requests while hidden');
  p.start();
  await settle();
  assert.equal(calls, 3, 'shown again: one request at once');
  await clock.advance(p.delay);
  assert.equal(calls, 4);
  assert.equal(p.errors, 1);
  assert.deepEqual(clock.pending(), [2000]);
  p.dispose();
  assert.deepEqual(clock.pending(), []);
  p.start();
  await settle();
  assert.equal(calls, 4, 'a disposed poller does nothing');
});

test('a throwing tick counts as an error and polling goes on', async () => {
  const clock = fakeTimers();
  let calls = 0;
  const p = new Poller(async () => {
    calls++;
    throw new Error('boom');
  }, clock);
  p.start();
  await settle();
  assert.equal(calls, 1);
  assert.equal(p.errors, 1);
  assert.deepEqual(clock.pending(), [2000]);
  p.dispose();
});

test('refresh during a request runs once more afterwards instead of overlapping', async () => {
  const clock = fakeTimers();
  let inflight = 0;
  let maxInflight = 0;
  let calls = 0;
  let release: (() => void) | null = null;
  const p = new Poller(async () => {
    calls++;
    inflight++;
    maxInflight = Math.max(maxInflight, inflight);
    await new Promise<void>(r => (release = r));
    inflight--;
    return 'changed';
  }, clock);
  p.start();
  await settle();
  void p.refresh();
  void p.refresh();
  assert.equal(calls, 1);
  release!();
  await settle();
  assert.equal(calls, 2);
  release!();
  await settle();
  assert.equal(maxInflight, 1);
  assert.equal(calls, 2);
  p.dispose();
});
