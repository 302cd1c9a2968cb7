/**
 * The AIOS sidebar: one poller over /aios/api/overview feeding six collapsible sections
 * (Jobs, Sweeps, Devices, Models, Endpoints, Datasets) and a status line for the empty, offline and
 * extension-missing states. Jobs ticked in the list can be opened side by side (Compare).
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { Button, ReactWidget, SidePanel, ToolbarButton, refreshIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import { ISignal, Signal } from '@lumino/signaling';
import * as React from 'react';

import { AiosAPI, APIError, FailureKind } from './api';
import { Sparkline } from './charts';
import { aiosIcon } from './icon';
import {
  ICluster,
  IDevice,
  IJob,
  IOverview,
  ISweep,
  actions,
  bestLabel,
  describe,
  describeCanary,
  describeLLM,
  describeSwapFailure,
  formatAge,
  formatBytes,
  formatNumber,
  groupModels,
  headlineMetric,
  latest,
  nodeResources,
  placementLabel,
  progress,
  progressLabel,
  qualityLabel,
  trialCounts
} from './model';
import { Poller, TickResult } from './poller';
import { watchVisibility } from './visibility';

export type Status = 'loading' | 'ok' | FailureKind;

/** The overview, refreshed by a poller while someone looks at it. */
export class SidebarModel {
  constructor(readonly api: AiosAPI) {
    this.poller = new Poller(() => this._tick());
  }

  readonly poller: Poller;

  get overview(): IOverview | null {
    return this._overview;
  }

  get status(): Status {
    return this._status;
  }

  get message(): string {
    return this._message;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The jobs ticked for a comparison, in the order they were ticked. */
  get selected(): string[] {
    return this._selected;
  }

  toggleSelected(name: string): void {
    this._selected = this._selected.includes(name) ? this._selected.filter(n => n !== name) : [...this._selected, name];
    this._changed.emit();
  }

  clearSelected(): void {
    this._selected = [];
    this._changed.emit();
  }

  /** Poll while visible, stand by while hidden. */
  setVisible(visible: boolean): void {
    if (visible) {
      this.poller.start();
    } else {
      this.poller.stop();
    }
  }

  refresh(): Promise<TickResult | undefined> {
    return this.poller.refresh();
  }

  async cancel(name: string): Promise<void> {
    await this._act(() => this.api.cancel(name));
  }

  async resume(name: string, steps?: number): Promise<void> {
    await this._act(() => this.api.resume(name, steps));
  }

  dispose(): void {
    this.poller.dispose();
    Signal.clearData(this);
  }

  private async _act(fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (reason) {
      void showErrorMessage('AIOS', reason instanceof Error ? reason.message : String(reason));
    }
    await this.refresh();
  }

  private async _tick(): Promise<TickResult> {
    try {
      const { data, changed } = await this.api.overview();
      const wasOk = this._status === 'ok';
      this._overview = data;
      this._status = 'ok';
      const names = new Set(data.jobs.jobs.map(j => j.name));
      this._selected = this._selected.filter(n => names.has(n)); // a deleted job leaves the selection
      this._message = '';
      if (changed || !wasOk) {
        this._changed.emit();
        return 'changed';
      }
      return 'unchanged';
    } catch (reason) {
      const kind: FailureKind = reason instanceof APIError ? reason.kind : 'error';
      const message = reason instanceof Error ? reason.message : String(reason);
      if (kind !== this._status || message !== this._message) {
        this._status = kind;
        this._message = message;
        if (kind === 'offline') {
          this.api.reset();
        }
        this._changed.emit();
      }
      return 'error';
    }
  }

  private _overview: IOverview | null = null;
  private _selected: string[] = [];
  private _status: Status = 'loading';
  private _message = '';
  private _changed = new Signal<this, void>(this);
}

export interface ISidebarOptions {
  model: SidebarModel;
  openJob: (name: string) => void;
  openSweep: (name: string) => void;
  openCompare: (jobs: string[]) => void;
  /** open the Chat panel of a language model */
  openChat: (model: string) => void;
}

/** The left-sidebar panel. */
export class AiosSidebar extends SidePanel {
  constructor(options: ISidebarOptions) {
    super();
    this.model = options.model;
    this.id = 'aios-sidebar';
    this.addClass('aios-sidebar');
    this.title.icon = aiosIcon;
    this.title.caption = 'AIOS: jobs, devices, models';
    this.toolbar.addItem(
      'refresh',
      new ToolbarButton({
        icon: refreshIcon,
        tooltip: 'Refresh now',
        onClick: () => void this.model.refresh()
      })
    );
    const heading = new Widget();
    heading.addClass('aios-title');
    heading.node.textContent = 'AIOS';
    this.header.addWidget(heading);
    this.header.addWidget(new StatusLine(this.model));
    const sections: Array<[string, (o: IOverview) => JSX.Element]> = [
      ['Jobs', o => <JobsList overview={o} model={this.model} openJob={options.openJob} openCompare={options.openCompare} />],
      ['Sweeps', o => <SweepsList overview={o} openSweep={options.openSweep} />],
      ['Devices', o => <DevicesList overview={o} />],
      ['Models', o => <ModelsList overview={o} openChat={options.openChat} />],
      ['Endpoints', o => <EndpointsList overview={o} />],
      ['Datasets', o => <DatasetsList overview={o} />]
    ];
    for (const [label, render] of sections) {
      const section = new Section(this.model, render);
      section.id = `aios-section-${label.toLowerCase()}`;
      section.title.label = label;
      this.addWidget(section);
    }
    watchVisibility(this, visible => this.model.setVisible(visible));
  }

  readonly model: SidebarModel;

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }

}

/** A ReactWidget re-rendered whenever the model changes. */
class Section extends ReactWidget {
  constructor(
    private _model: SidebarModel,
    private _render: (o: IOverview) => JSX.Element
  ) {
    super();
    this.addClass('aios-section');
    _model.changed.connect(() => this.update(), this);
  }

  render(): JSX.Element {
    const o = this._model.overview;
    if (!o) {
      return <div className="aios-empty">{this._model.status === 'loading' ? 'Loading…' : 'Not available.'}</div>;
    }
    return this._render(o);
  }
}

class StatusLine extends ReactWidget {
  constructor(private _model: SidebarModel) {
    super();
    this.addClass('aios-status');
    _model.changed.connect(() => this.update(), this);
  }

  render(): JSX.Element | null {
    const { status, message } = this._model;
    if (status === 'ok' || status === 'loading') {
      return null;
    }
    const text: Record<string, string> = {
      offline: 'The Jupyter server does not answer; retrying…',
      'no-extension':
        'The aios_lab server extension is not enabled: run `jupyter server extension enable aios_lab.jupyter_ext` and restart Jupyter.',
      error: `The AIOS API failed: ${message}`
    };
    return (
      <div className={`aios-banner aios-banner-${status}`} role="status">
        {text[status] ?? message}
      </div>
    );
  }
}

function SectionError(props: { error: string }): JSX.Element {
  return (
    <div className="aios-empty aios-section-error" title={props.error}>
      Could not read this: {props.error}
    </div>
  );
}

function JobsList(props: {
  overview: IOverview;
  model: SidebarModel;
  openJob: (name: string) => void;
  openCompare: (jobs: string[]) => void;
}): JSX.Element {
  const section = props.overview.jobs;
  if (section.error) {
    return <SectionError error={section.error} />;
  }
  if (section.jobs.length === 0) {
    return <div className="aios-empty">No jobs yet: `%aios train JOB --dataset D --model M`.</div>;
  }
  // newest first
  const jobs = [...section.jobs].sort((a, b) => (b.created ?? 0) - (a.created ?? 0));
  const selected = props.model.selected;
  return (
    <div>
      {selected.length > 0 && (
        <div className="aios-compare-bar">
          <span className="aios-dim">{selected.length} selected</span>
          <Button
            small
            disabled={selected.length < 2}
            className="aios-compare-open"
            title={selected.length < 2 ? 'Tick at least two jobs' : `Compare ${selected.join(', ')}`}
            onClick={() => props.openCompare(selected)}
          >
            Compare
          </Button>
          <Button small minimal className="aios-compare-clear" onClick={() => props.model.clearSelected()}>
            Clear
          </Button>
        </div>
      )}
      <ul className="aios-list aios-jobs">
        {jobs.map(job => (
          <JobRow key={job.name} job={job} model={props.model} openJob={props.openJob} />
        ))}
      </ul>
    </div>
  );
}

export function StateBadge(props: { state: string }): JSX.Element {
  return <span className={`aios-badge aios-badge-${props.state}`}>{props.state}</span>;
}

export function ProgressBar(props: { job: IJob }): JSX.Element {
  const pct = Math.round(progress(props.job.step, props.job.steps) * 1000) / 10;
  return (
    <div
      className={`aios-progress aios-progress-${props.job.state}`}
      role="progressbar"
      aria-valuemin={0}
      aria-valuemax={props.job.steps}
      aria-valuenow={props.job.step}
    >
      <div className="aios-progress-fill" style={{ width: `${pct}%` }} />
    </div>
  );
}

export function JobActions(props: { job: IJob; model: { cancel(n: string): Promise<void>; resume(n: string, s?: number): Promise<void> } }): JSX.Element {
  const { job, model } = props;
  const [busy, setBusy] = React.useState(false);
  const run = (fn: () => Promise<void>) => {
    setBusy(true);
    void fn().finally(() => setBusy(false));
  };
  return (
    <span className="aios-actions">
      {actions(job.state).map(action =>
        action === 'cancel' ? (
          <Button key="cancel" small minimal disabled={busy} className="aios-cancel" data-action="cancel" title="Checkpoint, then stop" onClick={() => run(() => model.cancel(job.name))}>
            Cancel
          </Button>
        ) : (
          <Button key="resume" small minimal disabled={busy} className="aios-resume" data-action="resume" title="Continue from the latest checkpoint" onClick={() => run(() => askResume(job, model))}>
            Resume
          </Button>
        )
      )}
    </span>
  );
}

async function askResume(job: IJob, model: { resume(n: string, s?: number): Promise<void> }): Promise<void> {
  const body = new ResumeBody(job.steps);
  const result = await showDialog({
    title: `Resume ${job.name}`,
    body,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Resume' })]
  });
  if (result.button.accept) {
    const steps = result.value ?? undefined;
    await model.resume(job.name, steps && steps !== job.steps ? steps : undefined);
  }
}

class ResumeBody extends ReactWidget implements Dialog.IBodyWidget<number | null> {
  constructor(private _steps: number) {
    super();
  }

  getValue(): number | null {
    const input = this.node.querySelector('input');
    const v = input ? parseInt(input.value, 10) : NaN;
    return isFinite(v) && v > 0 ? v : null;
  }

  render(): JSX.Element {
    return (
      <label className="aios-resume-form">
        Total steps <input className="jp-mod-styled" type="number" min={1} defaultValue={this._steps} />
      </label>
    );
  }
}

function JobRow(props: { job: IJob; model: SidebarModel; openJob: (name: string) => void }): JSX.Element {
  const { job } = props;
  const quality = qualityLabel(job);
  return (
    <li className="aios-job" data-job={job.name} data-state={job.state}>
      <div className="aios-row-head">
        <span className="aios-ellipsis">
          <input
            type="checkbox"
            className="aios-job-select"
            title="Tick jobs to compare them"
            aria-label={`Select ${job.name} for comparison`}
            checked={props.model.selected.includes(job.name)}
            onChange={() => props.model.toggleSelected(job.name)}
          />
          <button className="aios-link aios-job-name" title={`Open ${job.name}`} onClick={() => props.openJob(job.name)}>
            {job.name}
          </button>
        </span>
        <StateBadge state={job.state} />
      </div>
      <ProgressBar job={job} />
      <div className="aios-row-meta">
        <span className="aios-job-step" data-step={job.step}>
          {progressLabel(job)}
        </span>
      </div>
      <div className="aios-row-meta">
        <span title="latest training loss">
          loss <span className="aios-job-loss">{formatNumber(latest(job, 'train', 'loss'))}</span>
        </span>
        <Sparkline values={job.spark ?? []} log title="recent training loss (log scale)" />
        {quality && (
          <span className="aios-job-quality" title="latest evaluation">
            {quality}
          </span>
        )}
      </div>
      <div className="aios-row-meta aios-row-foot">
        <span className="aios-job-where" title={job.on === 'ray' ? 'Ray gang: hosts and where each rank runs' : 'devices'}>
          {placementLabel(job)}
        </span>
        <span className="aios-dim" title="model · dataset">
          {describe(job.model)} · {describe(job.dataset)}
        </span>
        <JobActions job={job} model={props.model} />
      </div>
      {job.error && job.state === 'failed' && <div className="aios-error" title={job.error}>{job.error.split('\n').slice(-1)[0]}</div>}
    </li>
  );
}

function DevicesList(props: { overview: IOverview }): JSX.Element {
  const section = props.overview.devices;
  if (section.error) {
    return <SectionError error={section.error} />;
  }
  return (
    <div>
      {section.devices.length === 0 ? (
        <div className="aios-empty">No devices found.</div>
      ) : (
        <ul className="aios-list aios-devices">
          {section.devices.map(d => (
            <DeviceRow key={d.id} device={d} />
          ))}
        </ul>
      )}
      {section.cluster && <ClusterNodes cluster={section.cluster} />}
      <div className="aios-subhead">Queue</div>
      {section.queue.length === 0 ? (
        <div className="aios-empty">Nothing waiting.</div>
      ) : (
        <ol className="aios-list aios-queue">
          {section.queue.map(q => (
            <li key={q.name} className="aios-queued" data-job={q.name}>
              <span className="aios-strong">{q.name}</span>
              <span className="aios-dim">
                needs {q.n_devices ?? '?'} · priority {q.priority ?? 0} · waiting {formatAge(q.created)}
              </span>
            </li>
          ))}
        </ol>
      )}
    </div>
  );
}

/** The connected Ray cluster's nodes as last seen (aios.devices()["cluster"], read from files by the server). */
function ClusterNodes(props: { cluster: ICluster }): JSX.Element {
  const c = props.cluster;
  const alive = c.nodes.filter(n => n.alive).length;
  return (
    <div className="aios-cluster" data-address={c.address}>
      <div className="aios-subhead aios-cluster-head" title={c.checked ? `nodes as seen ${formatAge(c.checked)} ago` : undefined}>
        Ray cluster {c.address} · {alive}/{c.nodes.length} nodes alive
      </div>
      {c.nodes.length === 0 ? (
        <div className="aios-empty">No nodes seen yet: `%aios cluster` looks again.</div>
      ) : (
        <ul className="aios-list aios-nodes">
          {c.nodes.map(n => (
            <li key={n.node_id} className="aios-node" data-node={n.node_id} data-host={n.host ?? ''} data-alive={String(n.alive)}>
              <div className="aios-row-head">
                <span className="aios-ellipsis" title={`node ${n.node_id}`}>
                  <span className="aios-strong">{n.host ?? n.ip ?? n.node_id.slice(0, 8)}</span>{' '}
                  <span className="aios-dim">
                    {n.ip ?? ''}
                    {n.head ? ' · head' : ''}
                  </span>
                </span>
                <span className={`aios-badge aios-badge-${n.alive ? (n.aios && n.aios.length ? 'running' : 'idle') : 'failed'}`}>
                  {n.alive ? 'alive' : 'dead'}
                </span>
              </div>
              <div className="aios-row-meta aios-dim aios-node-resources">{nodeResources(n)}</div>
              {n.aios && n.aios.length > 0 && <div className="aios-row-meta aios-node-work">{n.aios.join(', ')}</div>}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

/** A small bar filled to `percent`, then its label. */
function Meter(props: { percent: number; children: React.ReactNode }): JSX.Element {
  return (
    <>
      <span className="aios-meter">
        <span className="aios-meter-fill" style={{ width: `${Math.round(props.percent)}%` }} />
      </span>
      <span>{props.children}</span>
    </>
  );
}

function DeviceRow(props: { device: IDevice }): JSX.Element {
  const d = props.device;
  const mem = d.memory_total ? (d.memory_used ?? 0) / d.memory_total : null;
  const util = d.utilization !== undefined && d.utilization !== null ? d.utilization : null;
  return (
    <li className="aios-device" data-device={d.id}>
      <div className="aios-row-head">
        <span className="aios-ellipsis">
          <span className="aios-strong">
            {d.kind ?? 'device'} {d.id}
          </span>{' '}
          {d.name && <span className="aios-dim" title={d.name}>{d.name}</span>}
        </span>
        <span className={d.job ? 'aios-badge aios-badge-running' : 'aios-badge aios-badge-idle'} title={d.job ? `held by job ${d.job}` : 'free'}>
          {d.job ? d.job : 'idle'}
        </span>
      </div>
      {(mem !== null || util !== null) && (
        <div className="aios-row-meta" title="read through NVML">
          {mem !== null && (
            <Meter percent={mem * 100}>
              mem {formatBytes(d.memory_used)} / {formatBytes(d.memory_total)}
            </Meter>
          )}
          {util !== null && <Meter percent={util}>util {Math.round(util)}%</Meter>}
        </div>
      )}
    </li>
  );
}

function ModelsList(props: { overview: IOverview; openChat: (model: string) => void }): JSX.Element {
  const section = props.overview.models;
  if (section.error) {
    return <SectionError error={section.error} />;
  }
  const models = groupModels(section.models);
  if (models.length === 0) {
    return <div className="aios-empty">No models yet: `%aios publish JOB --as MODEL`.</div>;
  }
  return (
    <ul className="aios-list aios-models">
      {models.map(m => (
        <li key={m.name} className="aios-item aios-model" data-name={m.name}>
          <div className="aios-row-head">
            <span className="aios-strong aios-ellipsis">{m.name}</span>
            <span className="aios-actions">
              {m.lm && (
                <Button
                  small
                  minimal
                  className="aios-chat-open"
                  data-action="chat"
                  title={`Chat with ${m.name} on its serving endpoint (%aios serve --models ${m.name})`}
                  onClick={() => props.openChat(m.name)}
                >
                  Chat
                </Button>
              )}
              <span className="aios-badge aios-badge-idle" title={`${m.versions} version${m.versions === 1 ? '' : 's'}`}>
                v{m.latest}
              </span>
            </span>
          </div>
          <div className="aios-row-meta aios-dim">
            {[
              `${m.versions} version${m.versions === 1 ? '' : 's'}`,
              headlineMetric(m.metrics),
              m.nbytes !== null ? formatBytes(m.nbytes) : '',
              m.job ? `from ${m.job}` : '',
              m.created ? `${formatAge(m.created)} ago` : ''
            ]
              .filter(Boolean)
              .join(' · ')}
          </div>
          {m.aliases.length > 0 && <div className="aios-row-meta aios-aliases">{m.aliases.join('  ')}</div>}
        </li>
      ))}
    </ul>
  );
}

function EndpointsList(props: { overview: IOverview }): JSX.Element {
  const section = props.overview.endpoints;
  if (section.error) {
    return <SectionError error={section.error} />;
  }
  if (section.endpoints.length === 0) {
    return <div className="aios-empty">No endpoint running: `%aios serve`.</div>;
  }
  return (
    <ul className="aios-list aios-endpoints">
      {section.endpoints.map(e => {
        const models = e.models && typeof e.models === 'object' ? (Array.isArray(e.models) ? e.models.map(describe) : Object.keys(e.models)) : [];
        const state = e.state === 'running' && e.ready === false ? 'not ready' : String(e.state ?? '-');
        return (
          <li key={e.url} className="aios-item aios-endpoint" data-name={e.url}>
            <div className="aios-row-head">
              <span className="aios-strong aios-ellipsis" title={e.url}>
                {e.url}
              </span>
              <span className={`aios-badge aios-badge-${e.ready ? 'running' : state === 'dead' ? 'failed' : 'idle'}`}>{e.ready ? 'ready' : state}</span>
            </div>
            <div className="aios-row-meta aios-dim">
              {[
                models.length ? models.join(', ') : 'no models',
                typeof e.requests_per_s === 'number' ? `${formatNumber(e.requests_per_s)} req/s` : '',
                e.errors ? `${formatNumber(e.errors)} errors` : '',
                e.rejected ? `${formatNumber(e.rejected)} turned away` : '',
                e.started ? `up ${formatAge(e.started)}` : ''
              ]
                .filter(Boolean)
                .join(' · ')}
            </div>
            {(e.llm_models ?? []).length > 1 && e.llm && (
              <div className="aios-row-meta aios-llm aios-llm-total">
                language models: {typeof e.llm.tokens_per_s === 'number' ? `${formatNumber(e.llm.tokens_per_s)} tok/s` : '- tok/s'} · {e.llm.running ?? 0} running, {e.llm.waiting ?? 0} waiting
              </div>
            )}
            {(e.llm_models ?? []).map(m => (
              <div key={`llm-${m.model}`} className="aios-llm-model" data-model={m.model}>
                <div className="aios-row-meta aios-llm">{describeLLM(m)}</div>
                {m.routes && m.routes.length > 0 && <div className="aios-row-meta aios-dim aios-llm-routes">{m.routes.join(' ')}</div>}
              </div>
            ))}
            {(e.canaries ?? []).map(c => (
              <div key={`canary-${c.model}`} className={`aios-row-meta aios-canary${c.state === 'ended' ? ' aios-dim' : ''}`} data-model={c.model} data-state={c.state ?? ''}>
                {describeCanary(c)}
              </div>
            ))}
            {(e.swap_failures ?? []).map(f => (
              <div key={`swap-${f.model}`} className="aios-error aios-swap-failure" data-model={f.model}>
                {describeSwapFailure(f)}
                {f.failed_at ? ` (${formatAge(f.failed_at)} ago)` : ''}
              </div>
            ))}
            {(e.load_failures ?? []).map(f => (
              <div key={`load-${f.model}`} className="aios-error aios-load-failure" data-model={f.model}>
                {f.model} did not load: {f.reason}
              </div>
            ))}
          </li>
        );
      })}
    </ul>
  );
}

function SweepsList(props: { overview: IOverview; openSweep: (name: string) => void }): JSX.Element {
  const section = props.overview.sweeps;
  if (!section) {
    return <div className="aios-empty">This server does not list sweeps.</div>;
  }
  if (section.error) {
    return <SectionError error={section.error} />;
  }
  if (section.sweeps.length === 0) {
    return <div className="aios-empty">No sweeps yet: `%aios sweep NAME --dataset D --model M --over "lr=1e-4..1e-2:log"`.</div>;
  }
  const sweeps = [...section.sweeps].sort((a, b) => (b.created ?? 0) - (a.created ?? 0));
  return (
    <ul className="aios-list aios-sweeps">
      {sweeps.map(s => (
        <SweepRow key={s.name} sweep={s} openSweep={props.openSweep} />
      ))}
    </ul>
  );
}

function SweepRow(props: { sweep: ISweep; openSweep: (name: string) => void }): JSX.Element {
  const s = props.sweep;
  const best = bestLabel(s);
  return (
    <li className="aios-item aios-sweep" data-name={s.name} data-state={s.state}>
      <div className="aios-row-head">
        <button className="aios-link aios-sweep-name" title={`Open sweep ${s.name}`} onClick={() => props.openSweep(s.name)}>
          {s.name}
        </button>
        <StateBadge state={s.state} />
      </div>
      <div className="aios-row-meta aios-dim aios-sweep-counts">
        {trialCounts(s)} · {s.metric} ({s.goal})
      </div>
      {best && <div className="aios-row-meta aios-sweep-best">{best}</div>}
      {s.error && <div className="aios-error" title={s.error}>{s.error}</div>}
    </li>
  );
}

function DatasetsList(props: { overview: IOverview }): JSX.Element {
  const section = props.overview.datasets;
  if (section.error) {
    return <SectionError error={section.error} />;
  }
  if (section.datasets.length === 0) {
    return <div className="aios-empty">No datasets yet: `%aios dataset NAME --from SOURCE`.</div>;
  }
  return (
    <ul className="aios-list aios-datasets">
      {section.datasets.map(d => (
        <li key={`${d.name}@${d.version}`} className="aios-item" data-name={d.name}>
          <div className="aios-row-head">
            <span className="aios-strong aios-ellipsis">{d.name}</span>
            {d.version !== undefined && <span className="aios-badge aios-badge-idle">v{d.version}</span>}
          </div>
          <div className="aios-row-meta aios-dim">
            {[
              d.task ?? '',
              d.splits ? Object.entries(d.splits).map(([s, n]) => `${s} ${n}`).join(' · ') : '',
              typeof d.nbytes === 'number' ? formatBytes(d.nbytes) : '',
              d.created ? `${formatAge(d.created)} ago` : ''
            ]
              .filter(Boolean)
              .join(' · ')}
          </div>
        </li>
      ))}
    </ul>
  );
}
