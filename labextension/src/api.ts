/**
 * The REST client of /aios/api/ (ServerConnection adds the token and the XSRF header).
 * GETs send `If-None-Match` with the last ETag of the same URL, so an unchanged answer is a 304.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { FailureKind, ICharts, IChatMessage, IComparison, IJob, IOverview, ISweep, compareQuery, failureKind } from './model';

export { FailureKind };

export class APIError extends Error {
  constructor(
    readonly kind: FailureKind,
    message: string,
    readonly status?: number
  ) {
    super(message);
  }
}

/** The body of POST /aios/api/chat (the server extension holds the endpoint's token, not the browser). */
export interface IChatRequest {
  model: string;
  messages: IChatMessage[];
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  seed?: number;
  /** an endpoint's URL as the Endpoints section lists it; none: the first running one that serves the model */
  endpoint?: string;
}

export interface IFetched<T> {
  data: T;
  changed: boolean;
}

export class AiosAPI {
  constructor(settings?: ServerConnection.ISettings) {
    this.settings = settings ?? ServerConnection.makeSettings();
  }

  readonly settings: ServerConnection.ISettings;

  overview(): Promise<IFetched<IOverview>> {
    return this.get<IOverview>('overview');
  }

  job(name: string): Promise<IFetched<IJob>> {
    return this.get<IJob>(`jobs/${encodeURIComponent(name)}`);
  }

  charts(name: string): Promise<IFetched<ICharts>> {
    return this.get<ICharts>(`jobs/${encodeURIComponent(name)}/charts`);
  }

  log(name: string, tail = 200): Promise<IFetched<{ log: string }>> {
    return this.get(`jobs/${encodeURIComponent(name)}/log?tail=${tail}`);
  }

  sweep(name: string): Promise<IFetched<ISweep>> {
    return this.get<ISweep>(`sweeps/${encodeURIComponent(name)}`);
  }

  compare(jobs: string[]): Promise<IFetched<IComparison>> {
    return this.get<IComparison>(`compare?jobs=${encodeURIComponent(compareQuery(jobs))}`);
  }

  cancel(name: string): Promise<IJob> {
    return this.post<IJob>(`jobs/${encodeURIComponent(name)}/cancel`, {});
  }

  resume(name: string, steps?: number): Promise<IJob> {
    return this.post<IJob>(`jobs/${encodeURIComponent(name)}/resume`, steps ? { steps } : {});
  }

  /**
   * Start a chat reply: the Response of POST /aios/api/chat once it streams (text/event-stream; its
   * X-Aios-Endpoint header names the endpoint), or an APIError with the server's one-line message.
   * Aborting `signal` ends the fetch, and the server then closes its request to the endpoint.
   */
  async chat(body: IChatRequest, signal?: AbortSignal): Promise<Response> {
    const url = URLExt.join(this.settings.baseUrl, 'aios', 'api', 'chat');
    const init: RequestInit = { method: 'POST', body: JSON.stringify(body), cache: 'no-store', signal };
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (reason) {
      if (signal?.aborted) {
        throw reason;
      }
      throw new APIError('offline', `The Jupyter server does not answer (${reason}).`);
    }
    if (!response.ok) {
      await this._json(response); // throws the server's message
    }
    return response;
  }

  /** Forget the cached answer of every URL (e.g. after a server restart). */
  reset(): void {
    this._cache.clear();
  }

  async get<T>(path: string): Promise<IFetched<T>> {
    const url = URLExt.join(this.settings.baseUrl, 'aios', 'api', path);
    const held = this._cache.get(url);
    const headers: Record<string, string> = {};
    if (held) {
      headers['If-None-Match'] = held.etag;
    }
    const response = await this._request(url, { method: 'GET', headers, cache: 'no-store' });
    if (response.status === 304 && held) {
      return { data: held.data as T, changed: false };
    }
    const data = (await this._json(response)) as T;
    const etag = response.headers.get('Etag');
    if (etag) {
      this._cache.set(url, { etag, data });
    }
    return { data, changed: true };
  }

  async post<T>(path: string, body: unknown): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'aios', 'api', path);
    const response = await this._request(url, { method: 'POST', body: JSON.stringify(body) });
    return (await this._json(response)) as T;
  }

  private async _request(url: string, init: RequestInit): Promise<Response> {
    try {
      return await ServerConnection.makeRequest(url, init, this.settings);
    } catch (reason) {
      throw new APIError('offline', `The Jupyter server does not answer (${reason}).`);
    }
  }

  private async _json(response: Response): Promise<unknown> {
    let body: any = null;
    const text = await response.text();
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (response.ok) {
      return body;
    }
    const kind = failureKind(response.status, body);
    const message =
      kind === 'no-extension'
        ? 'The aios_lab server extension is not enabled on this Jupyter server.'
        : (body && (body.message || body.reason)) || `${response.status} ${response.statusText}`;
    throw new APIError(kind, message, response.status);
  }

  private _cache = new Map<string, { etag: string; data: unknown }>();
}
