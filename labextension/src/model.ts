/**
 * The JSON models the server sends (one per object, shared with the CLI and the widgets) and the
 * pure logic the views use: formatting, progress, which actions a state allows, chart geometry.
 * Nothing here touches the DOM or JupyterLab, so it is unit-tested in plain node.
 */

export type JobState =
  | 'queued'
  | 'running'
  | 'succeeded'
  | 'failed'
  | 'cancelled'
  | 'interrupted'
  | 'pruned';

export interface IJob {
  name: string;
  state: JobState | string;
  step: number;
  steps: number;
  priority?: number;
  devices?: number[] | null;
  n_devices?: number;
  device_kind?: string;
  pid?: number | null;
  created?: number;
  started?: number | null;
  ended?: number | null;
  updated?: number;
  error?: string | null;
  dataset?: unknown;
  model?: unknown;
  config?: Record<string, unknown>;
  /** the latest values per split: {"train": {"loss", "accuracy", "examples_per_s", "input_wait", ...}, "val": {...}} */
  metrics?: Record<string, Record<string, number | null> | null>;
  eta_s?: number | null;
  attempts?: number;
  /** 'local' or 'ray' (a gang on the connected cluster) */
  on?: string;
  /** where it runs, in a few words: device ids, or 'ray 2x4: r0 HOST NODE, r1 ...' for a gang */
  where?: string;
  /** recent training losses, oldest first (overview only) */
  spark?: number[];
  /** steps with a finished checkpoint (detail only) */
  checkpoints?: number[];
}

export interface IDevice {
  id: number;
  kind?: string;
  name?: string;
  job?: string | null;
  memory_used?: number;
  memory_total?: number;
  utilization?: number;
}

export interface IQueued {
  name: string;
  n_devices?: number;
  priority?: number;
  created?: number;
}

export interface IEndpoint {
  url: string;
  state?: string;
  ready?: boolean;
  started?: number;
  models?: Record<string, unknown> | unknown[];
  requests_total?: number | null;
  requests_per_s?: number | null;
  errors?: number | null;
  rejected?: number | null;
  /** models whose last hot swap failed (the endpoint keeps serving the version it had) */
  swap_failures?: ISwapFailure[];
  /** models that would not load at all */
  load_failures?: Array<{ model: string; reason: string }>;
  /** the endpoint's language models together (null when it serves none) */
  llm?: ILLMOverall | null;
  /** each language model's numbers */
  llm_models?: ILLMStats[];
  /** canaries by model (running or ended) */
  canaries?: ICanary[];
}

export interface ILLMOverall {
  routes?: string[];
  models?: string[];
  tokens_per_s?: number | null;
  running?: number;
  waiting?: number;
}

/** One language model on an endpoint, as its status row publishes it (serve/llm/metrics.py). */
export interface ILLMStats {
  model: string;
  routes?: string[];
  versions?: number[];
  tokens_per_s?: number | null;
  ttft_p50_ms?: number | null;
  ttft_p99_ms?: number | null;
  running?: number;
  waiting?: number;
  kv_slots?: number;
  kv_slots_used?: number;
  generation_tokens?: number;
}

export interface ICanary {
  model: string;
  version?: number;
  percent?: number;
  base?: number | null;
  state?: string;
  arms?: Record<string, { version?: number; requests?: number; errors?: number; error_rate?: number | null }>;
}

/** 'chat: 457 tok/s · TTFT p50 12.5 ms / p99 80.3 ms · 3 running, 1 waiting · KV 3/16' */
export function describeLLM(m: ILLMStats): string {
  const parts = [`${m.model}${m.versions && m.versions.length ? ` v${m.versions.join(',')}` : ''}`];
  parts.push(typeof m.tokens_per_s === 'number' ? `${formatNumber(m.tokens_per_s)} tok/s` : '- tok/s');
  if (typeof m.ttft_p50_ms === 'number') {
    parts.push(`TTFT p50 ${formatNumber(m.ttft_p50_ms)} ms / p99 ${formatNumber(m.ttft_p99_ms)} ms`);
  }
  parts.push(`${m.running ?? 0} running, ${m.waiting ?? 0} waiting`);
  if (m.kv_slots) {
    parts.push(`KV ${m.kv_slots_used ?? 0}/${m.kv_slots}`);
  }
  return parts.join(' · ');
}

/** 'canary digits v4 at 25% (base v3) · 10 req, 0 errors' */
export function describeCanary(c: ICanary): string {
  const base = c.base !== undefined && c.base !== null ? ` (base v${c.base})` : '';
  const arm = c.arms?.canary;
  const seen = arm && typeof arm.requests === 'number' ? ` · ${arm.requests} req, ${arm.errors ?? 0} errors` : '';
  const ended = c.state === 'ended' ? ' · ended' : '';
  return `canary ${c.model} v${c.version ?? '?'} at ${c.percent ?? 0}%${base}${seen}${ended}`;
}

/** A Ray node as aios.devices()["cluster"] shows it (cluster/api.py Node.to_json). */
export interface IClusterNode {
  node_id: string;
  host?: string | null;
  ip?: string | null;
  alive: boolean;
  head?: boolean;
  cpus?: number;
  gpus?: number;
  tpus?: number;
  memory?: number;
  /** what aios runs there: 'JOB rank R' */
  aios?: string[];
}

export interface ICluster {
  address: string;
  ray_version?: string;
  checked?: number | null;
  nodes: IClusterNode[];
}

/** '8 CPU · 4 GPU · 32.0 GiB' */
export function nodeResources(n: IClusterNode): string {
  const parts = [`${formatNumber(n.cpus ?? 0)} CPU`];
  if (n.gpus) {
    parts.push(`${formatNumber(n.gpus)} GPU`);
  }
  if (n.tpus) {
    parts.push(`${formatNumber(n.tpus)} TPU`);
  }
  if (n.memory) {
    parts.push(formatBytes(n.memory));
  }
  return parts.join(' · ');
}

// ---- sweeps and comparisons ----------------------------------------------------------------

export interface ITrial {
  number: number;
  job: string;
  state: string;
  params: Record<string, unknown>;
  value: number | null;
  step: number | null;
  steps: number | null;
  best?: boolean;
  error?: string | null;
}

/** Sweep.to_json() (curves null in the list). */
export interface ISweep {
  name: string;
  state: string;
  error?: string | null;
  created?: number;
  dataset?: unknown;
  model?: unknown;
  metric: string;
  goal: string;
  early_stop?: string;
  sampler?: string;
  trials_total: number;
  space?: Record<string, string>;
  trials: ITrial[];
  best: ITrial | null;
  counts: Record<string, number>;
  device_steps?: number;
  curves?: Record<string, Array<[number, number]>> | null;
  /** the chart the notebook's sweep widget draws (detail only) */
  html?: string;
}

/** '2/6 trials (1 running, 1 succeeded)' */
export function trialCounts(s: ISweep): string {
  const counts = Object.entries(s.counts ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([state, n]) => `${n} ${state}`)
    .join(', ');
  return `${s.trials.length}/${s.trials_total} trials${counts ? ` (${counts})` : ''}`;
}

/** 'best sb-t01: val.loss 0.1234' or '' before any trial finished. */
export function bestLabel(s: ISweep): string {
  return s.best ? `best ${s.best.job}: ${s.metric} ${formatNumber(s.best.value)}` : '';
}

/** A setting of a trial as text (numbers in 4 significant digits). */
export function formatParam(v: unknown): string {
  return typeof v === 'number' ? formatNumber(v) : describe(v);
}

/** aios.compare(...).to_json() plus its charts by step. */
export interface IComparison {
  jobs: string[];
  metrics: string[];
  summary: Array<Record<string, unknown> & { job: string; state: string; step: number }>;
  config: Record<string, Record<string, unknown>>;
  html: string;
}

/** The job names of a comparison query ('a,b,c') in order, without repeats or blanks. */
export function compareQuery(names: string[]): string {
  return [...new Set(names.map(n => n.trim()).filter(Boolean))].join(',');
}

/** A failed hot swap as the endpoint publishes it in its catalog row's status. */
export interface ISwapFailure {
  model: string;
  /** the alias that moved, or null for the newest version */
  ref?: string | null;
  version?: number;
  serving?: number;
  reason?: string;
  attempts?: number;
  failed_at?: number;
}

/** 'hot swap of digits@production to v4 failed (2 tries): sha256 mismatch; still serving v3' */
export function describeSwapFailure(f: ISwapFailure): string {
  const target = f.ref ? `${f.model}@${f.ref}` : f.model;
  const tries = f.attempts ? ` (${f.attempts} ${f.attempts === 1 ? 'try' : 'tries'})` : '';
  const serving = f.serving !== undefined ? `; still serving v${f.serving}` : '';
  return `hot swap of ${target} to v${f.version ?? '?'} failed${tries}: ${f.reason ?? 'unknown reason'}${serving}`;
}

export interface IDataset {
  name: string;
  version?: number;
  task?: string;
  splits?: Record<string, number>;
  nbytes?: number;
  created?: number;
}

/** A section of the overview: its items, or the error that reading them raised. */
export interface ISection {
  error?: string;
}

export interface IOverview {
  jobs: ISection & { jobs: IJob[] };
  devices: ISection & { devices: IDevice[]; queue: IQueued[]; kind?: string; cluster?: ICluster | null };
  models: ISection & { models: Record<string, unknown>[] };
  endpoints: ISection & { endpoints: IEndpoint[] };
  datasets: ISection & { datasets: IDataset[] };
  /** absent from a server older than the sweeps section */
  sweeps?: ISection & { sweeps: ISweep[] };
}

/** The job's charts, drawn by the server with the module the notebook widget uses (aios_lab.charts). */
export interface ICharts {
  name: string;
  step: number;
  html: string;
}

// ---- failures ------------------------------------------------------------------------------

/** Why a request failed, in the terms the views show. */
export type FailureKind =
  | 'offline' // the Jupyter server does not answer (restarting, gone)
  | 'no-extension' // the server answers but has no /aios/api (server extension not enabled)
  | 'missing' // the object is gone (a job deleted while shown): a 404 from the aios API itself
  | 'refused' // the action is not possible in this state (409)
  | 'error'; // anything else

/** Classify an HTTP failure from its status and (JSON, if any) body. */
export function failureKind(status: number, body: any): FailureKind {
  if (status === 404) {
    // the aios API's own errors name their class; Jupyter's 404 for a route it lacks does not
    return body && typeof body.error === 'string' ? 'missing' : 'no-extension';
  }
  if (status === 409) {
    return 'refused';
  }
  if (status === 0 || status === 502 || status === 503 || status === 504) {
    return 'offline';
  }
  return 'error';
}

// ---- states and actions --------------------------------------------------------------------

const ACTIVE = new Set(['queued', 'running']);
const RESUMABLE = new Set(['cancelled', 'interrupted', 'failed', 'pruned']);

/** Whether the job is still going (so its views keep polling). */
export function isActive(state: string): boolean {
  return ACTIVE.has(state);
}

/** The buttons a job row shows in this state. */
export function actions(state: string): Array<'cancel' | 'resume'> {
  if (ACTIVE.has(state)) {
    return ['cancel'];
  }
  if (RESUMABLE.has(state)) {
    return ['resume'];
  }
  return [];
}

/** Progress as a fraction in [0, 1] (0 when the number of steps is unknown). */
export function progress(step: number, steps: number): number {
  if (!steps || steps <= 0 || !isFinite(step)) {
    return 0;
  }
  return Math.min(1, Math.max(0, step / steps));
}

// ---- formatting ----------------------------------------------------------------------------

/** 75 -> '1m 15s', 7300 -> '2h 1m', null -> '' */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds) || seconds < 0) {
    return '';
  }
  const s = Math.round(seconds);
  if (s < 60) {
    return `${s}s`;
  }
  if (s < 3600) {
    const m = Math.floor(s / 60);
    const r = s % 60;
    return r ? `${m}m ${r}s` : `${m}m`;
  }
  if (s < 86400) {
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    return m ? `${h}h ${m}m` : `${h}h`;
  }
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  return h ? `${d}d ${h}h` : `${d}d`;
}

/** A metric value in 4 significant digits, '-' when missing. */
export function formatNumber(value: number | null | undefined): string {
  if (value === null || value === undefined || typeof value !== 'number' || !isFinite(value)) {
    return '-';
  }
  if (value === 0) {
    return '0';
  }
  const abs = Math.abs(value);
  if (abs >= 1e5 || abs < 1e-3) {
    return value.toExponential(2);
  }
  return String(Number(value.toPrecision(4)));
}

/** 1536 -> '1.5 KiB' */
export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !isFinite(n)) {
    return '-';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** Seconds since a unix time, in the shortest unit: '5s', '3m', '2h', '4d'. */
export function formatAge(t: number | null | undefined, now: number = Date.now() / 1000): string {
  if (!t) {
    return '-';
  }
  const s = Math.max(0, now - t);
  if (s < 60) {
    return `${Math.floor(s)}s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)}h`;
  }
  return `${Math.floor(s / 86400)}d`;
}

/** 'step 120/300 · 40% · ETA 1m 5s' (the ETA only while running). */
export function progressLabel(job: IJob): string {
  const parts = [`${job.step}/${job.steps}`];
  if (job.steps > 0) {
    parts.push(`${Math.floor(progress(job.step, job.steps) * 100)}%`);
  }
  const eta = formatDuration(job.eta_s);
  if (eta && job.state === 'running') {
    parts.push(`ETA ${eta}`);
  }
  return parts.join(' · ');
}

/** Device ids as a compact list: [0,1,2,3,6] -> '0-3,6'. */
export function formatDevices(ids: number[] | null | undefined): string {
  if (!ids || ids.length === 0) {
    return '-';
  }
  const sorted = [...ids].sort((a, b) => a - b);
  const out: string[] = [];
  let start = sorted[0];
  let prev = start;
  for (const id of sorted.slice(1).concat([NaN])) {
    if (id === prev + 1) {
      prev = id;
      continue;
    }
    out.push(start === prev ? `${start}` : `${start}-${prev}`);
    start = prev = id;
  }
  return out.join(',');
}

/** Where a job runs: its device kind and ids, or for a cluster gang the hosts and where each rank runs. */
export function placementLabel(job: IJob): string {
  if (job.on === 'ray' && job.where) {
    return job.where;
  }
  const kind = job.device_kind ?? 'dev';
  return `${kind} ${job.devices && job.devices.length ? formatDevices(job.devices) : `×${job.n_devices ?? '-'}`}`;
}

/** A label for a model spec or name as the jobs API stores it. */
export function describe(value: unknown): string {
  if (value === null || value === undefined) {
    return '-';
  }
  if (typeof value === 'string' || typeof value === 'number') {
    return String(value);
  }
  if (typeof value === 'object') {
    const v = value as Record<string, unknown>;
    const name = v.name ?? v.target;
    if (name !== undefined) {
      return v.version !== undefined ? `${name}@${v.version}` : String(name);
    }
  }
  return JSON.stringify(value);
}

// ---- metrics -------------------------------------------------------------------------------

/** The latest value of one metric of one split ('train', 'val', ...) from the job's JSON model, or null. */
export function latest(job: IJob, split: string, name: string): number | null {
  const v = job.metrics?.[split]?.[name];
  return typeof v === 'number' && isFinite(v) ? v : null;
}

/** The evaluation splits of a job's latest metrics ('val', 'test'), in the order the server sent them. */
export function evalSplits(job: IJob): string[] {
  return Object.keys(job.metrics ?? {}).filter(s => s !== 'train');
}

/** The metrics a quality line shows, in order (the names of aios_lab.metric_names). */
export const QUALITY = ['accuracy', 'mse', 'perplexity'];

/** 'val accuracy 0.9812' for the first eval split and quality metric the job has, else ''. */
export function qualityLabel(job: IJob): string {
  for (const split of evalSplits(job)) {
    for (const name of QUALITY) {
      const v = latest(job, split, name);
      if (v !== null) {
        return `${split} ${name} ${formatNumber(v)}`;
      }
    }
  }
  return '';
}

// ---- chart geometry ------------------------------------------------------------------------

export interface IBox {
  width: number;
  height: number;
  pad?: number;
}

export interface IDomain {
  x: [number, number];
  y: [number, number];
}

/** The bounding domain of several point series (degenerate ranges widened so they can be drawn). */
export function domainOf(all: Array<Array<[number, number]>>): IDomain | null {
  let x0 = Infinity;
  let x1 = -Infinity;
  let y0 = Infinity;
  let y1 = -Infinity;
  for (const pts of all) {
    for (const [x, y] of pts) {
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      y0 = Math.min(y0, y);
      y1 = Math.max(y1, y);
    }
  }
  if (!isFinite(x0) || !isFinite(y0)) {
    return null;
  }
  if (x0 === x1) {
    x0 -= 1;
    x1 += 1;
  }
  if (y0 === y1) {
    const d = Math.abs(y0) * 0.1 || 1;
    y0 -= d;
    y1 += d;
  }
  return { x: [x0, x1], y: [y0, y1] };
}

/** An SVG path ('M x y L x y ...') of points scaled into a box (y grows downwards in SVG). */
export function linePath(points: Array<[number, number]>, box: IBox, domain?: IDomain | null): string {
  const dom = domain ?? domainOf([points]);
  if (!dom || points.length === 0) {
    return '';
  }
  const pad = box.pad ?? 0;
  const w = box.width - 2 * pad;
  const h = box.height - 2 * pad;
  const sx = (x: number) => pad + ((x - dom.x[0]) / (dom.x[1] - dom.x[0])) * w;
  const sy = (y: number) => pad + h - ((y - dom.y[0]) / (dom.y[1] - dom.y[0])) * h;
  return points
    .map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${round2(sx(x))} ${round2(sy(y))}`)
    .join(' ');
}

/**
 * A sparkline path of values at evenly spaced x positions. With `log`, positive values are drawn on
 * a log scale (a loss falling from 6 to 0.01 stays readable); any value <= 0 falls back to linear.
 */
export function sparkPath(values: number[], width: number, height: number, log = false): string {
  const finite = values.filter(v => isFinite(v));
  const useLog = log && finite.length > 0 && finite.every(v => v > 0);
  const pts = finite.map((v, i) => [i, useLog ? Math.log10(v) : v] as [number, number]);
  if (pts.length < 2) {
    return '';
  }
  return linePath(pts, { width, height, pad: 1 });
}

function round2(v: number): number {
  return Math.round(v * 100) / 100;
}

// ---- models and endpoints ------------------------------------------------------------------

export interface IModelSummary {
  name: string;
  latest: number;
  versions: number;
  /** 'production→v2' for each alias */
  aliases: string[];
  nbytes: number | null;
  metrics: Record<string, unknown>;
  job: string | null;
  created: number | null;
  /** a language model (its signature has text generation): the sidebar offers Chat */
  lm: boolean;
}

/** Whether a registry row is a language model: its signature has the text-generation route (task lm). */
export function isLanguageModel(row: Record<string, any>): boolean {
  const sig = row && typeof row.signature === 'object' && row.signature !== null ? row.signature : {};
  return typeof sig.generate === 'object' && sig.generate !== null;
}

/** Registry rows (one per version) grouped into one summary per model, names in order. */
export function groupModels(rows: Array<Record<string, any>>): IModelSummary[] {
  const byName = new Map<string, Array<Record<string, any>>>();
  for (const r of rows) {
    if (typeof r.name !== 'string') {
      continue;
    }
    const list = byName.get(r.name) ?? [];
    list.push(r);
    byName.set(r.name, list);
  }
  const out: IModelSummary[] = [];
  for (const [name, versions] of [...byName.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    const sorted = versions.slice().sort((a, b) => Number(a.version ?? 0) - Number(b.version ?? 0));
    const latest = sorted[sorted.length - 1];
    const aliases: string[] = [];
    for (const v of sorted) {
      for (const a of Array.isArray(v.aliases) ? v.aliases : []) {
        aliases.push(`${a}→v${v.version}`);
      }
    }
    const lineage = (latest.lineage ?? {}) as Record<string, unknown>;
    out.push({
      name,
      latest: Number(latest.version ?? 0),
      versions: sorted.length,
      aliases,
      nbytes: typeof latest.nbytes === 'number' ? latest.nbytes : null,
      metrics: (latest.metrics ?? {}) as Record<string, unknown>,
      job: typeof lineage.job === 'string' ? lineage.job : null,
      created: typeof latest.created === 'number' ? latest.created : null,
      lm: sorted.some(isLanguageModel)
    });
  }
  return out;
}

/** The headline metric of a model version (its metrics.json): the quality metric if there is one, else the loss,
 * with the split it was measured on: 'val accuracy 0.9712'. */
export function headlineMetric(metrics: Record<string, unknown>): string {
  for (const key of [...QUALITY, 'loss']) {
    const v = metrics[key];
    if (typeof v === 'number' && isFinite(v)) {
      const split = typeof metrics.split === 'string' ? `${metrics.split} ` : '';
      return `${split}${key} ${formatNumber(v)}`;
    }
  }
  return '';
}

// ---- chat ----------------------------------------------------------------------------------

export interface IChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** An assistant's reply as its server-sent events arrive (POST /aios/api/chat streams the endpoint's). */
export interface IChatReply {
  text: string;
  /** why it ended ('stop', 'length'); null while it streams */
  finish: string | null;
  promptTokens: number | null;
  completionTokens: number | null;
  /** the version that answered, 'chat:1' */
  model: string | null;
  error: string | null;
  /** the stream said [DONE] (or ended with an error) */
  done: boolean;
}

export function emptyReply(): IChatReply {
  return { text: '', finish: null, promptTokens: null, completionTokens: null, model: null, error: null, done: false };
}

/**
 * Complete events of a server-sent event stream: `buffer` is what arrived so far (earlier rest + new text);
 * answers each event's data (its `data:` lines joined by newlines) and the incomplete rest to keep.
 */
export function sseEvents(buffer: string): { events: string[]; rest: string } {
  const text = buffer.replace(/\r\n?/g, '\n');
  const blocks = text.split('\n\n');
  const rest = blocks.pop() ?? '';
  const events: string[] = [];
  for (const block of blocks) {
    const data = block
      .split('\n')
      .filter(line => line.startsWith('data:'))
      .map(line => line.slice(line.startsWith('data: ') ? 6 : 5));
    if (data.length) {
      events.push(data.join('\n'));
    }
  }
  return { events, rest };
}

/** The reply after one event's data (OpenAI chat.completion.chunk, an error event, or [DONE]); pure. */
export function applyChatEvent(reply: IChatReply, data: string): IChatReply {
  if (data.trim() === '[DONE]') {
    return { ...reply, done: true };
  }
  let doc: any;
  try {
    doc = JSON.parse(data);
  } catch {
    return reply; // not ours to show
  }
  if (!doc || typeof doc !== 'object') {
    return reply;
  }
  if (doc.error !== undefined && doc.error !== null) {
    const e = doc.error;
    const message = typeof e === 'string' ? e : typeof e?.message === 'string' ? e.message : JSON.stringify(e);
    return { ...reply, error: message, done: true };
  }
  const next = { ...reply };
  if (typeof doc.model === 'string') {
    next.model = doc.model;
  }
  if (doc.usage && typeof doc.usage === 'object') {
    if (typeof doc.usage.prompt_tokens === 'number') {
      next.promptTokens = doc.usage.prompt_tokens;
    }
    if (typeof doc.usage.completion_tokens === 'number') {
      next.completionTokens = doc.usage.completion_tokens;
    }
  }
  for (const choice of Array.isArray(doc.choices) ? doc.choices : []) {
    if ((choice?.index ?? 0) !== 0) {
      continue;
    }
    const content = choice?.delta?.content;
    if (typeof content === 'string') {
      next.text += content;
    }
    if (typeof choice?.finish_reason === 'string') {
      next.finish = choice.finish_reason;
    }
  }
  return next;
}

/** Feed `chunk` (decoded text) into the stream's state: the reply so far and the incomplete rest. */
export function feedChat(state: { reply: IChatReply; rest: string }, chunk: string): { reply: IChatReply; rest: string } {
  const { events, rest } = sseEvents(state.rest + chunk);
  let reply = state.reply;
  for (const data of events) {
    reply = applyChatEvent(reply, data);
  }
  return { reply, rest };
}

/**
 * The line under a reply: where it came from, its tokens and their rate (from the first text to the end),
 * '127.0.0.1:8500 · chat:1 · 12 tokens · 85.3 tok/s'.
 */
export function chatStats(reply: IChatReply, endpoint: string | null, seconds: number | null): string {
  const tokens = reply.completionTokens;
  const parts = [endpoint ? endpoint.replace(/^https?:\/\//, '') : '', reply.model ?? ''];
  if (tokens !== null) {
    parts.push(`${tokens} token${tokens === 1 ? '' : 's'}`);
    if (seconds !== null && seconds > 0 && tokens > 0) {
      parts.push(`${formatNumber(tokens / seconds)} tok/s`);
    }
  }
  if (reply.finish === 'length') {
    parts.push('cut at max tokens');
  }
  return parts.filter(Boolean).join(' · ');
}
