/**
 * Main-area panels beside the job panel: one sweep (its trials and the metric of every trial against step, the
 * chart the notebook's sweep widget draws) and a comparison of jobs (aios.compare: curves, final and best
 * values, the settings that differ). Both poll while visible and something still runs; unchanged answers are 304s.
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { AiosAPI, APIError } from './api';
import { ServerCharts } from './charts';
import { IComparison, ISweep, bestLabel, describe, formatNumber, formatParam, isActive, trialCounts } from './model';
import { Poller, TickResult } from './poller';
import { StateBadge } from './sidebar';
import { watchVisibility } from './visibility';

/** A panel that fetches one JSON document while visible and stops once `done(data)` says nothing will change. */
abstract class PollingPanel<T> extends ReactWidget {
  constructor() {
    super();
    this.poller = new Poller(() => this._tick(), { interval: 1000, maxIdle: 2000 });
    watchVisibility(this, () => this._sync());
  }

  readonly poller: Poller;

  dispose(): void {
    this.poller.dispose();
    super.dispose();
  }

  protected abstract fetch(): Promise<{ data: T; changed: boolean }>;
  protected abstract done(data: T): boolean;
  protected abstract renderData(data: T): JSX.Element;
  protected abstract heading(): string;

  render(): JSX.Element {
    if (this._data === null) {
      return (
        <div className="aios-panel-body">
          <h2>{this.heading()}</h2>
          {this._error ? (
            <div className={`aios-banner aios-banner-${this._missing ? 'missing' : 'offline'}`} role="status">
              {this._error}
            </div>
          ) : (
            <div className="aios-empty">Loading…</div>
          )}
        </div>
      );
    }
    return this.renderData(this._data);
  }

  private _sync(): void {
    const visible = this.isVisible && document.visibilityState !== 'hidden';
    if (visible && !this._missing && (this._data === null || !this.done(this._data))) {
      this.poller.start();
    } else {
      this.poller.stop();
    }
  }

  private async _tick(): Promise<TickResult> {
    try {
      const { data, changed } = await this.fetch();
      const show = changed || this._error !== '';
      this._data = data;
      this._error = '';
      if (show) {
        this.update();
      }
      if (this.done(data)) {
        this.poller.stop();
      }
      return show ? 'changed' : 'unchanged';
    } catch (reason) {
      this._missing = reason instanceof APIError && (reason.kind === 'missing' || reason.status === 400);
      this._error = reason instanceof Error ? reason.message : String(reason);
      if (this._missing) {
        this.poller.stop();
      }
      this.update();
      return 'error';
    }
  }

  private _data: T | null = null;
  private _error = '';
  private _missing = false;
}

export class SweepPanel extends PollingPanel<ISweep> {
  constructor(
    readonly api: AiosAPI,
    readonly name: string,
    private _openJob: (name: string) => void
  ) {
    super();
    this.addClass('aios-sweep-panel');
    this.id = `aios-sweep-${name}`;
    this.title.label = `Sweep ${name}`;
    this.title.caption = `AIOS sweep ${name}`;
    this.title.closable = true;
  }

  protected fetch(): Promise<{ data: ISweep; changed: boolean }> {
    return this.api.sweep(this.name);
  }

  protected done(s: ISweep): boolean {
    return !isActive(s.state) && !s.trials.some(t => isActive(t.state));
  }

  protected heading(): string {
    return this.name;
  }

  protected renderData(s: ISweep): JSX.Element {
    const keys = Object.keys(s.space ?? {});
    return (
      <div className="aios-panel-body" data-sweep={s.name} data-state={s.state}>
        <div className="aios-panel-head">
          <h2>{s.name}</h2>
          <StateBadge state={s.state} />
        </div>
        <div className="aios-row-meta aios-dim">
          {[
            `${describe(s.model)} on ${describe(s.dataset)}`,
            `${s.metric} (${s.goal})`,
            s.sampler ?? '',
            s.early_stop && s.early_stop !== 'none' ? `early stop ${s.early_stop}` : '',
            trialCounts(s),
            s.device_steps !== undefined ? `${s.device_steps} device-steps` : ''
          ]
            .filter(Boolean)
            .join(' · ')}
        </div>
        {bestLabel(s) && <div className="aios-row-meta aios-sweep-best">{bestLabel(s)}</div>}
        {s.error && <pre className="aios-error aios-pre">{s.error}</pre>}
        <ServerCharts html={s.html ?? null} />
        <h3>Trials</h3>
        {s.trials.length === 0 ? (
          <div className="aios-empty">No trial yet.</div>
        ) : (
          <table className="aios-table aios-trials">
            <thead>
              <tr>
                <th>trial</th>
                <th>state</th>
                {keys.map(k => (
                  <th key={k} title={s.space?.[k]}>
                    {k}
                  </th>
                ))}
                <th>{s.metric}</th>
                <th>step</th>
              </tr>
            </thead>
            <tbody>
              {s.trials.map(t => (
                <tr key={t.job} className={`aios-trial${t.best ? ' aios-trial-best' : ''}`} data-job={t.job} data-state={t.state}>
                  <td>
                    <button className="aios-link" title={`Open job ${t.job}`} onClick={() => this._openJob(t.job)}>
                      {t.job}
                    </button>
                    {t.best ? ' ★' : ''}
                  </td>
                  <td>
                    <StateBadge state={t.state} />
                  </td>
                  {keys.map(k => (
                    <td key={k}>{formatParam(t.params[k])}</td>
                  ))}
                  <td>{formatNumber(t.value)}</td>
                  <td>{t.steps ? `${t.step ?? 0}/${t.steps}` : (t.step ?? '-')}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </div>
    );
  }
}

export class ComparePanel extends PollingPanel<IComparison> {
  constructor(
    readonly api: AiosAPI,
    readonly jobs: string[]
  ) {
    super();
    this.addClass('aios-compare-panel');
    const key = jobs.join(',');
    this.id = `aios-compare-${key}`;
    this.title.label = `Compare ${jobs.length} jobs`;
    this.title.caption = `AIOS: ${jobs.join(', ')}`;
    this.title.closable = true;
  }

  protected fetch(): Promise<{ data: IComparison; changed: boolean }> {
    return this.api.compare(this.jobs);
  }

  protected done(c: IComparison): boolean {
    return !c.summary.some(e => isActive(e.state));
  }

  protected heading(): string {
    return `Compare ${this.jobs.join(', ')}`;
  }

  protected renderData(c: IComparison): JSX.Element {
    const columns = c.metrics.flatMap(m => [`${m} final`, `${m} best`]);
    const config = Object.entries(c.config);
    return (
      <div className="aios-panel-body" data-jobs={c.jobs.join(',')}>
        <h2>Compare {c.jobs.join(', ')}</h2>
        <ServerCharts html={c.html} />
        <h3>Final and best</h3>
        <table className="aios-table aios-compare-summary">
          <thead>
            <tr>
              <th>job</th>
              <th>state</th>
              <th>step</th>
              {columns.map(k => (
                <th key={k}>{k}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {c.summary.map(e => (
              <tr key={e.job} data-job={e.job}>
                <td>{e.job}</td>
                <td>
                  <StateBadge state={e.state} />
                </td>
                <td>{e.step}</td>
                {columns.map(k => (
                  <td key={k}>{formatNumber(e[k] as number | null | undefined)}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
        <h3>Settings that differ</h3>
        {config.length === 0 ? (
          <div className="aios-empty">The same settings.</div>
        ) : (
          <table className="aios-table aios-compare-config">
            <thead>
              <tr>
                <th>setting</th>
                {c.jobs.map(j => (
                  <th key={j}>{j}</th>
                ))}
              </tr>
            </thead>
            <tbody>
              {config.map(([key, values]) => (
                <tr key={key} data-key={key}>
                  <th>{key}</th>
                  {c.jobs.map(j => (
                    <td key={j}>{formatParam(values[j])}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </div>
    );
  }
}
