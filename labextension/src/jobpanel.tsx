/**
 * The main-area panel of one job: state, progress, its charts (rendered by the server with aios_lab.charts,
 * the drawing the notebook widget shows), configuration, checkpoints and a live log tail. It stops polling
 * once the job has ended (or the panel is hidden); unchanged answers are 304s.
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { AiosAPI, APIError } from './api';
import { ServerCharts } from './charts';
import { IJob, describe, evalSplits, formatAge, formatDevices, formatDuration, formatNumber, isActive, latest, placementLabel, progressLabel } from './model';
import { Poller, TickResult } from './poller';
import { JobActions, ProgressBar, StateBadge } from './sidebar';
import { watchVisibility } from './visibility';

const LOG_LINES = 200;

export class JobPanel extends ReactWidget {
  constructor(
    readonly api: AiosAPI,
    readonly name: string,
    private _onAction: () => void
  ) {
    super();
    this.addClass('aios-job-panel');
    this.id = `aios-job-${name}`;
    this.title.label = `Job ${name}`;
    this.title.caption = `AIOS job ${name}`;
    this.title.closable = true;
    this.poller = new Poller(() => this._tick(), { interval: 1000, maxIdle: 1500 });
    watchVisibility(this, () => this._sync());
  }

  readonly poller: Poller;

  dispose(): void {
    this.poller.dispose();
    super.dispose();
  }

  async cancel(name: string): Promise<void> {
    await this._act(() => this.api.cancel(name));
  }

  async resume(name: string, steps?: number): Promise<void> {
    await this._act(() => this.api.resume(name, steps));
  }

  private _sync(): void {
    const visible = this.isVisible && document.visibilityState !== 'hidden';
    // a finished job needs one last look, then nothing more
    if (visible && (this._job === null || isActive(this._job.state) || this._stale)) {
      this.poller.start();
    } else {
      this.poller.stop();
    }
  }

  private async _act(fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
      this._error = '';
    } catch (reason) {
      this._error = reason instanceof Error ? reason.message : String(reason);
    }
    this._stale = true;
    this._onAction();
    this._sync();
    await this.poller.refresh();
  }

  private async _tick(): Promise<TickResult> {
    try {
      const [job, charts, log] = await Promise.all([this.api.job(this.name), this.api.charts(this.name), this.api.log(this.name, LOG_LINES)]);
      const changed = job.changed || charts.changed || log.changed || this._missing || this._offline;
      this._job = job.data;
      this._charts = charts.data.html;
      this._log = log.data.log;
      this._missing = false;
      this._offline = false;
      this._stale = false;
      if (changed) {
        this.update();
      }
      if (!isActive(job.data.state)) {
        this.poller.stop();
      }
      return changed ? 'changed' : 'unchanged';
    } catch (reason) {
      if (reason instanceof APIError && reason.kind === 'missing') {
        this._missing = true;
        this.poller.stop();
      } else {
        this._offline = true;
      }
      this._error = reason instanceof Error ? reason.message : String(reason);
      this.update();
      return 'error';
    }
  }

  render(): JSX.Element {
    const job = this._job;
    if (this._missing) {
      return (
        <div className="aios-panel-body">
          <h2>{this.name}</h2>
          <div className="aios-banner aios-banner-missing" role="status">
            This job no longer exists (it was deleted). You can close this tab.
          </div>
        </div>
      );
    }
    if (!job) {
      return (
        <div className="aios-panel-body">
          <h2>{this.name}</h2>
          <div className="aios-empty">{this._offline ? `Cannot reach the server: ${this._error}` : 'Loading…'}</div>
        </div>
      );
    }
    const evals: Array<[string, string]> = [];
    for (const split of evalSplits(job)) {
      for (const [name, value] of Object.entries(job.metrics?.[split] ?? {})) {
        if (typeof value === 'number' && name !== 'step' && name !== 'time') {
          evals.push([`${split} ${name}`, formatNumber(value)]);
        }
      }
    }
    const wait = latest(job, 'train', 'input_wait');
    const facts: Array<[string, string]> = [
      ['state', job.state],
      ['step', progressLabel(job)],
      ['model', describe(job.model)],
      ['dataset', describe(job.dataset)],
      ['devices', job.on === 'ray' ? placementLabel(job) : `${job.device_kind ?? ''} ${formatDevices(job.devices)} (${job.n_devices ?? '-'})`],
      ['train loss', formatNumber(latest(job, 'train', 'loss'))],
      ...evals,
      ['examples/s', formatNumber(latest(job, 'train', 'examples_per_s'))],
      ['input wait', wait === null ? '-' : `${Math.round(wait * 100)}%`],
      ['ETA', job.state === 'running' ? formatDuration(job.eta_s) || '-' : '-'],
      ['priority', String(job.priority ?? 0)],
      ['attempts', String(job.attempts ?? 0)],
      ['pid', job.pid ? String(job.pid) : '-'],
      ['created', job.created ? `${formatAge(job.created)} ago` : '-'],
      ['ran for', job.started ? formatDuration((job.ended ?? Date.now() / 1000) - job.started) : '-']
    ];
    return (
      <div className="aios-panel-body" data-job={job.name} data-state={job.state}>
        <div className="aios-panel-head">
          <h2>{job.name}</h2>
          <StateBadge state={job.state} />
          <JobActions job={job} model={this} />
        </div>
        <ProgressBar job={job} />
        {this._offline && <div className="aios-banner aios-banner-offline">Cannot reach the server; retrying… ({this._error})</div>}
        {job.error && <pre className="aios-error aios-pre">{job.error}</pre>}
        <ServerCharts html={this._charts} />
        <div className="aios-columns">
          <section>
            <h3>Job</h3>
            <table className="aios-facts">
              <tbody>
                {facts.map(([k, v]) => (
                  <tr key={k}>
                    <th>{k}</th>
                    <td>{v}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </section>
          <section>
            <h3>Checkpoints</h3>
            {job.checkpoints && job.checkpoints.length ? (
              <ul className="aios-checkpoints">
                {job.checkpoints.map(s => (
                  <li key={s}>step {s}</li>
                ))}
              </ul>
            ) : (
              <div className="aios-empty">None yet.</div>
            )}
            <h3>Configuration</h3>
            <pre className="aios-pre aios-config">{JSON.stringify(job.config ?? {}, null, 2)}</pre>
          </section>
        </div>
        <h3>Log (last {LOG_LINES} lines)</h3>
        <pre className="aios-pre aios-log">{this._log || '(empty)'}</pre>
      </div>
    );
  }

  private _job: IJob | null = null;
  private _charts: string | null = null;
  private _log = '';
  private _error = '';
  private _missing = false;
  private _offline = false;
  private _stale = false;
}
