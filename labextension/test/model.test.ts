import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import {
  IJob,
  ISweep,
  actions,
  bestLabel,
  compareQuery,
  describe,
  describeCanary,
  describeLLM,
  describeSwapFailure,
  domainOf,
  evalSplits,
  failureKind,
  formatAge,
  formatBytes,
  formatDevices,
  formatDuration,
  formatNumber,
  groupModels,
  headlineMetric,
  isActive,
  latest,
  linePath,
  nodeResources,
  placementLabel,
  progress,
  progressLabel,
  qualityLabel,
  sparkPath,
  trialCounts
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

test('latest metrics come from the job JSON by split and metric name', () => {
  const j = job({ metrics: { train: { loss: 0.25, examples_per_s: 5120, input_wait: 0.03 }, val: { loss: 0.3, accuracy: 0.9812 } } });
  assert.equal(latest(j, 'train', 'loss'), 0.25);
  assert.equal(latest(j, 'val', 'accuracy'), 0.9812);
  assert.equal(latest(j, 'val', 'mse'), null);
  assert.equal(latest(job({}), 'train', 'loss'), null);
  assert.deepEqual(evalSplits(j), ['val']);
  assert.equal(qualityLabel(j), 'val accuracy 0.9812');
  assert.equal(qualityLabel(job({ metrics: { train: { loss: 1 } } })), '');
  assert.equal(qualityLabel(job({ metrics: { val: { loss: 1, mse: 0.5 } } })), 'val mse 0.5');
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

test('failures are classified for the status line', () => {
  assert.equal(failureKind(404, { message: "no job named 'x'", error: 'NotFound' }), 'missing');
  assert.equal(failureKind(404, null), 'no-extension');
  assert.equal(failureKind(404, { message: 'Not Found' }), 'no-extension');
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
    { name: 'a', version: 2, aliases: ['staging'], nbytes: 2048, metrics: { accuracy: 0.9712, loss: 0.1, split: 'val' }, lineage: { job: 'j1' }, created: 5 },
    { name: 'a', version: 1, aliases: ['production'], nbytes: 1024, metrics: { accuracy: 0.95 }, lineage: {}, created: 3 }
  ];
  const groups = groupModels(rows);
  assert.deepEqual(groups.map(g => g.name), ['a', 'b']);
  assert.equal(groups[0].latest, 2);
  assert.equal(groups[0].versions, 2);
  assert.deepEqual(groups[0].aliases, ['production→v1', 'staging→v2']);
  assert.equal(groups[0].nbytes, 2048);
  assert.equal(groups[0].job, 'j1');
  assert.equal(headlineMetric(groups[0].metrics), 'val accuracy 0.9712');
  assert.equal(headlineMetric(groups[1].metrics), 'loss 0.5');
  assert.equal(headlineMetric({}), '');
  assert.deepEqual(groupModels([{ version: 1 }]), []);
});

test('a failed hot swap reads as one line', () => {
  assert.equal(
    describeSwapFailure({ model: 'digits', ref: 'production', version: 4, serving: 3, reason: 'sha256 mismatch', attempts: 2 }),
    'hot swap of digits@production to v4 failed (2 tries): sha256 mismatch; still serving v3'
  );
  assert.equal(describeSwapFailure({ model: 'iris', version: 2, attempts: 1, reason: 'bad file' }), 'hot swap of iris to v2 failed (1 try): bad file');
});

test('language models, canaries and cluster nodes read as one line each', () => {
  const llm = { model: 'chat', versions: [2], tokens_per_s: 456.7, ttft_p50_ms: 12.5, ttft_p99_ms: 80.25, running: 3, waiting: 1, kv_slots: 16, kv_slots_used: 3 };
  assert.equal(describeLLM(llm), 'chat v2 · 456.7 tok/s · TTFT p50 12.5 ms / p99 80.25 ms · 3 running, 1 waiting · KV 3/16');
  assert.equal(describeLLM({ model: 'chat', tokens_per_s: null }), 'chat · - tok/s · 0 running, 0 waiting');
  const arms = { canary: { version: 4, requests: 10, errors: 1 } };
  assert.equal(describeCanary({ model: 'digits', version: 4, percent: 25, base: 3, state: 'running', arms }), 'canary digits v4 at 25% (base v3) · 10 req, 1 errors');
  assert.equal(describeCanary({ model: 'digits', version: 4, percent: 25, state: 'ended' }), 'canary digits v4 at 25% · ended');
  assert.equal(nodeResources({ node_id: 'n', alive: true, cpus: 8, gpus: 4, memory: 32 * 2 ** 30 }), '8 CPU · 4 GPU · 32.0 GiB');
  assert.equal(nodeResources({ node_id: 'n', alive: true, cpus: 2, tpus: 4 }), '2 CPU · 4 TPU');
});

test('sweeps: trial counts, best so far and comparison queries', () => {
  const trial = (number: number, state: string, value: number | null) => ({ number, job: `s-t0${number}`, state, params: {}, value, step: 10, steps: 20 });
  const sweep: ISweep = {
    name: 's',
    state: 'running',
    metric: 'val.loss',
    goal: 'min',
    trials_total: 4,
    trials: [trial(0, 'succeeded', 0.25), trial(1, 'running', null)],
    best: trial(0, 'succeeded', 0.25),
    counts: { succeeded: 1, running: 1 }
  };
  assert.equal(trialCounts(sweep), '2/4 trials (1 running, 1 succeeded)');
  assert.equal(bestLabel(sweep), 'best s-t00: val.loss 0.25');
  assert.equal(bestLabel({ ...sweep, best: null }), '');
  assert.equal(compareQuery(['a', ' b', 'a', '', 'c']), 'a,b,c');
});

test('placementLabel names device ids locally and the ranks\' hosts for a Ray gang', () => {
  const local: IJob = { name: 'a', state: 'running', step: 1, steps: 2, devices: [0, 1, 2, 3], n_devices: 4, device_kind: 'cpu' };
  assert.equal(placementLabel(local), 'cpu 0-3');
  assert.equal(placementLabel({ ...local, devices: [], state: 'queued' }), 'cpu ×4');
  const gang: IJob = { ...local, devices: [], on: 'ray', where: 'ray 2x4: r0 host-a 1a2b3c, r1 host-b 4d5e6f' };
  assert.equal(placementLabel(gang), 'ray 2x4: r0 host-a 1a2b3c, r1 host-b 4d5e6f');
});
