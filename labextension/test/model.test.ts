import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import {
  IJob,
  IMetricRow,
  actions,
  describe,
  domainOf,
  failureKind,
  formatAge,
  formatBytes,
  formatDevices,
  formatDuration,
  formatNumber,
  groupModels,
  headlineMetric,
  isActive,
  lastStep,
  linePath,
  mergeMetrics,
  progress,
  progressLabel,
  series,
  sparkPath,
  splits,
  ticks
} from '../src/model';

const job = (over: Partial<IJob>): IJob => ({ name: 'j', state: 'running', step: 0, steps: 100, ...over });

test('actions follow the state', () => {
  assert.deepEqual(actions('running'), ['cancel']);
  assert.deepEqual(actions('queued'), ['cancel']);
  assert.deepEqual(actions('cancelled'), ['resume']);
  assert.deepEqual(actions('interrupted'), ['resume']);
  assert.deepEqual(actions('failed'), ['resume']);
  assert.deepEqual(actions('succeeded'), []);
  assert.equal(isActive('running'), true);
  assert.equal(isActive('cancelled'), false);
});

test('progress is clamped and safe with unknown steps', () => {
  assert.equal(progress(50, 100), 0.5);
  assert.equal(progress(150, 100), 1);
  assert.equal(progress(-3, 100), 0);
  assert.equal(progress(5, 0), 0);
});

test('durations, numbers, bytes and ages read like the CLI', () => {
  assert.equal(formatDuration(5), '5s');
  assert.equal(formatDuration(75), '1m 15s');
  assert.equal(formatDuration(120), '2m');
  assert.equal(formatDuration(7300), '2h 1m');
  assert.equal(formatDuration(90000), '1d 1h');
  assert.equal(formatDuration(null), '');
  assert.equal(formatDuration(-1), '');
  assert.equal(formatNumber(0.123456), '0.1235');
  assert.equal(formatNumber(2.5), '2.5');
  assert.equal(formatNumber(0), '0');
  assert.equal(formatNumber(null), '-');
  assert.equal(formatNumber(NaN), '-');
  assert.equal(formatNumber(0.00001234), '1.23e-5');
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(3 * 1024 ** 3), '3.0 GiB');
  assert.equal(formatAge(100, 130), '30s');
  assert.equal(formatAge(100, 100 + 7200), '2h');
  assert.equal(formatAge(null), '-');
});

test('progress label has step/steps, percent and an ETA only while running', () => {
  assert.equal(progressLabel(job({ step: 30, steps: 120, eta_s: 65 })), '30/120 · 25% · ETA 1m 5s');
  assert.equal(progressLabel(job({ state: 'cancelled', step: 30, steps: 120, eta_s: 65 })), '30/120 · 25%');
  assert.equal(progressLabel(job({ step: 0, steps: 0 })), '0/0');
});

test('device lists compress into ranges', () => {
  assert.equal(formatDevices([0, 1, 2, 3, 6]), '0-3,6');
  assert.equal(formatDevices([5, 4]), '4-5');
  assert.equal(formatDevices([7]), '7');
  assert.equal(formatDevices([]), '-');
  assert.equal(formatDevices(null), '-');
});

test('describe names model specs', () => {
  assert.equal(describe('mlp'), 'mlp');
  assert.equal(describe({ kind: 'builtin', name: 'mlp' }), 'mlp');
  assert.equal(describe({ kind: 'cell', name: 'net', version: 2 }), 'net@2');
  assert.equal(describe({ kind: 'module', target: 'pkg.mod:Net' }), 'pkg.mod:Net');
  assert.equal(describe({ name: 'digits', version: 1 }), 'digits@1');
  assert.equal(describe(undefined), '-');
});

test('metrics merge incrementally without duplicates', () => {
  const a: IMetricRow[] = [
    { step: 10, time: 1, loss: 2 },
    { step: 20, time: 2, loss: 1.5 }
  ];
  const b: IMetricRow[] = [
    { step: 20, time: 2, loss: 1.5 },
    { step: 20, time: 2, loss: 1.6, split: 'val', accuracy: 0.5 },
    { step: 30, time: 3, loss: 1.2 }
  ];
  const merged = mergeMetrics(a, b);
  assert.equal(merged.length, 4);
  assert.equal(lastStep(merged), 30);
  assert.equal(lastStep([]), null);
  assert.equal(mergeMetrics(a, []), a);
  assert.deepEqual(series(merged, 'loss'), [[10, 2], [20, 1.5], [30, 1.2]]);
  assert.deepEqual(series(merged, 'accuracy', 'val'), [[20, 0.5]]);
  assert.deepEqual(series(merged, 'accuracy'), []);
  assert.deepEqual(splits(merged), ['val']);
});

test('line paths scale into the box with y growing downwards', () => {
  const d = linePath([[0, 0], [10, 1]], { width: 100, height: 50 });
  assert.equal(d, 'M0 50 L100 0');
  const padded = linePath([[0, 0], [10, 1]], { width: 100, height: 50, pad: 5 });
  assert.equal(padded, 'M5 45 L95 5');
  assert.equal(linePath([], { width: 10, height: 10 }), '');
});

test('degenerate domains are widened, empty ones are null', () => {
  assert.deepEqual(domainOf([[[5, 2]]]), { x: [4, 6], y: [1.8, 2.2] });
  assert.deepEqual(domainOf([[[0, 0], [0, 0]]]), { x: [-1, 1], y: [-1, 1] });
  assert.equal(domainOf([[], []]), null);
  const both = domainOf([[[0, 1]], [[10, 3]]]);
  assert.deepEqual(both, { x: [0, 10], y: [1, 3] });
});

test('sparklines need two finite points', () => {
  assert.equal(sparkPath([1], 60, 16), '');
  assert.equal(sparkPath([], 60, 16), '');
  const d = sparkPath([3, 2, 1], 60, 16);
  assert.match(d, /^M1 1 L30 8 L59 15$/);
});

test('ticks are round numbers inside the range', () => {
  assert.deepEqual(ticks(0, 100, 4), [0, 50, 100]);
  assert.deepEqual(ticks(0, 1, 4), [0, 0.5, 1]);
  assert.deepEqual(ticks(0, 1000, 5), [0, 200, 400, 600, 800, 1000]);
  assert.deepEqual(ticks(0.13, 0.91, 4), [0.2, 0.4, 0.6, 0.8]);
  assert.deepEqual(ticks(1, 1, 4), []);
  for (const t of ticks(3.7, 91.2, 5)) {
    assert.ok(t >= 3.7 && t <= 91.2);
  }
});

test('failures are classified for the status line', () => {
  assert.equal(failureKind(404, { message: 'no job', missing: 'job' }), 'missing');
  assert.equal(failureKind(404, null), 'no-extension');
  assert.equal(failureKind(404, { message: 'Not Found' }), 'no-extension');
  assert.equal(failureKind(404, { message: 'x', available: false }), 'error');
  assert.equal(failureKind(409, { message: 'running' }), 'refused');
  assert.equal(failureKind(503, null), 'offline');
  assert.equal(failureKind(500, { message: 'boom' }), 'error');
});

test('sparklines can use a log scale for positive values only', () => {
  const lin = sparkPath([100, 10, 1], 60, 16);
  const log = sparkPath([100, 10, 1], 60, 16, true);
  assert.notEqual(lin, log);
  assert.match(log, /^M1 1 L30 8 L59 15$/); // evenly spaced decades
  assert.equal(sparkPath([1, 0, -1], 60, 16, true), sparkPath([1, 0, -1], 60, 16));
});

test('registry versions group into one summary per model', () => {
  const rows = [
    { name: 'b', version: 1, aliases: [], nbytes: 10, metrics: { loss: 0.5 }, lineage: {}, created: 1 },
    { name: 'a', version: 2, aliases: ['staging'], nbytes: 2048, metrics: { accuracy: 0.9712 }, lineage: { job: 'j1' }, created: 5 },
    { name: 'a', version: 1, aliases: ['production'], nbytes: 1024, metrics: { accuracy: 0.95 }, lineage: {}, created: 3 }
  ];
  const groups = groupModels(rows);
  assert.deepEqual(groups.map(g => g.name), ['a', 'b']);
  assert.equal(groups[0].latest, 2);
  assert.equal(groups[0].versions, 2);
  assert.deepEqual(groups[0].aliases, ['production→v1', 'staging→v2']);
  assert.equal(groups[0].nbytes, 2048);
  assert.equal(groups[0].job, 'j1');
  assert.equal(headlineMetric(groups[0].metrics), 'acc 0.9712');
  assert.equal(headlineMetric(groups[1].metrics), 'loss 0.5');
  assert.equal(headlineMetric({}), '');
  assert.deepEqual(groupModels([{ version: 1 }]), []);
});
