/**
 * A poller that stands by while nobody looks and backs off while nothing changes or the server is
 * away. Pure timing logic (clock and timers injectable), so it is unit-tested in plain node.
 *
 *   - a change is seen within `maxIdle` ms (1.5 s by default) while visible (the interval grows from `interval` to
 *     `maxIdle` while answers stay the same: 304s, a few header bytes each);
 *   - errors back off exponentially up to `maxError` ms (server restarting, extension missing);
 *   - hidden (panel collapsed, browser tab hidden): no requests at all; shown again: one at once.
 */

export type TickResult = 'changed' | 'unchanged' | 'error';

export interface IPollerOptions {
  /** the first interval and the one after a change, ms */
  interval?: number;
  /** the longest interval while answers do not change, ms */
  maxIdle?: number;
  /** the longest interval while requests fail, ms */
  maxError?: number;
  /** growth factor per unchanged answer */
  idleFactor?: number;
  /** growth factor per failed request */
  errorFactor?: number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
}

export interface IDelayState {
  delay: number;
  errors: number;
}

/** The next delay after an outcome: a pure function of the options and the previous state. */
export function nextDelay(
  prev: IDelayState,
  result: TickResult,
  opts: Required<Pick<IPollerOptions, 'interval' | 'maxIdle' | 'maxError' | 'idleFactor' | 'errorFactor'>>
): IDelayState {
  switch (result) {
    case 'changed':
      return { delay: opts.interval, errors: 0 };
    case 'unchanged':
      return { delay: Math.min(opts.maxIdle, Math.max(opts.interval, prev.delay * opts.idleFactor)), errors: 0 };
    case 'error': {
      const errors = prev.errors + 1;
      const delay = Math.min(opts.maxError, opts.interval * Math.pow(opts.errorFactor, errors));
      return { delay, errors };
    }
  }
}

export class Poller {
  constructor(tick: () => Promise<TickResult>, options: IPollerOptions = {}) {
    this._tick = tick;
    this._opts = {
      interval: options.interval ?? 1000,
      maxIdle: options.maxIdle ?? 1500,
      maxError: options.maxError ?? 10000,
      idleFactor: options.idleFactor ?? 1.25,
      errorFactor: options.errorFactor ?? 2
    };
    this._set = options.setTimer ?? ((fn, ms) => setTimeout(fn, ms));
    this._clear = options.clearTimer ?? (h => clearTimeout(h as ReturnType<typeof setTimeout>));
    this._state = { delay: this._opts.interval, errors: 0 };
  }

  /** The delay before the next request, ms. */
  get delay(): number {
    return this._state.delay;
  }

  /** Failed requests in a row. */
  get errors(): number {
    return this._state.errors;
  }

  get running(): boolean {
    return this._running;
  }

  get disposed(): boolean {
    return this._disposed;
  }

  /** Start (or resume after `stop`) with one request at once. */
  start(): void {
    if (this._disposed || this._running) {
      return;
    }
    this._running = true;
    void this.refresh();
  }

  /** Stand by: no requests until `start` (the one in flight finishes but schedules nothing). */
  stop(): void {
    this._running = false;
    this._cancelTimer();
  }

  /** Request now (e.g. after the user pressed a button), then carry on at the fresh interval. */
  async refresh(): Promise<TickResult | undefined> {
    if (this._disposed) {
      return undefined;
    }
    this._cancelTimer();
    if (this._inflight) {
      this._again = true;
      return this._inflight;
    }
    const run = async (): Promise<TickResult> => {
      let result: TickResult;
      try {
        result = await this._tick();
      } catch {
        result = 'error';
      }
      this._state = nextDelay(this._state, result, this._opts);
      return result;
    };
    this._inflight = run();
    const result = await this._inflight;
    this._inflight = null;
    if (this._again && !this._disposed) {
      this._again = false;
      return this.refresh();
    }
    this._schedule();
    return result;
  }

  dispose(): void {
    this._disposed = true;
    this.stop();
  }

  private _schedule(): void {
    this._cancelTimer();
    if (!this._running || this._disposed) {
      return;
    }
    this._timer = this._set(() => {
      this._timer = null;
      void this.refresh();
    }, this._state.delay);
  }

  private _cancelTimer(): void {
    if (this._timer !== null) {
      this._clear(this._timer);
      this._timer = null;
    }
  }

  private _tick: () => Promise<TickResult>;
  private _opts: Required<Pick<IPollerOptions, 'interval' | 'maxIdle' | 'maxError' | 'idleFactor' | 'errorFactor'>>;
  private _set: (fn: () => void, ms: number) => unknown;
  private _clear: (handle: unknown) => void;
  private _state: IDelayState;
  private _timer: unknown = null;
  private _running = false;
  private _disposed = false;
  private _inflight: Promise<TickResult> | null = null;
  private _again = false;
}
