/**
 * The main-area panel of one job: state, progress, loss and accuracy curves, configuration,
 * checkpoints and a live log tail. It fetches only new metric rows (`since` the last step held)
 * and stops polling once the job has ended (or the panel is hidden).
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { AiosAPI, APIError } from './api';
import { ISeries, LineChart } from './charts';
import {
  IJob,
  IMetricRow,
  describe,
  formatAge,
  formatDevices,
  formatDuration,
  formatNumber,
  isActive,
  lastStep,
  mergeMetrics,
  progressLabel,
  series,
  splits
} from './model';
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
      const [job, metrics, log] = await Promise.all([
        this.api.job(this.name),
        this.api.metrics(this.name, lastStep(this._metrics)),
        this.api.log(this.name, LOG_LINES)
      ]);
      const changed = job.changed || metrics.data.metrics.length > 0 || log.changed || this._missing || this._offline;
      this._job = job.data;
      this._metrics = mergeMetrics(this._metrics, metrics.data.metrics);
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
    const rows = this._metrics;
    const evalSplits = splits(rows);
    const lossSeries: ISeries[] = [{ label: 'train loss', points: series(rows, 'loss'), className: 'aios-series-0' }];
    evalSplits.forEach((s, i) => lossSeries.push({ label: `${s} loss`, points: series(rows, 'loss', s), className: `aios-series-${(i % 3) + 1}` }));
    const accSeries: ISeries[] = [{ label: 'train accuracy', points: series(rows, 'accuracy'), className: 'aios-series-0' }];
    evalSplits.forEach((s, i) => accSeries.push({ label: `${s} accuracy`, points: series(rows, 'accuracy', s), className: `aios-series-${(i % 3) + 1}` }));
    const facts: Array<[string, string]> = [
      ['state', job.state],
      ['step', progressLabel(job)],
      ['model', describe(job.model)],
      ['dataset', describe(job.dataset)],
      ['devices', `${job.device_kind ?? ''} ${formatDevices(job.devices)} (${job.n_devices ?? '-'})`],
      ['loss', formatNumber(job.loss)],
      ['accuracy', formatNumber(job.accuracy)],
      ['examples/s', formatNumber(job.examples_per_s)],
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
        <div className="aios-charts">
          <LineChart title="Loss" series={lossSeries} />
          <LineChart title="Accuracy" series={accSeries} />
        </div>
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
  private _metrics: IMetricRow[] = [];
  private _log = '';
  private _error = '';
  private _missing = false;
  private _offline = false;
  private _stale = false;
}
