// The typed client of the manager's HTTP API. It depends only on schema/ and Node's built-ins
// (global fetch), so it runs without any of the server's dependencies.
import { errorFromProblem, InternalServerError, ServiceUnavailable, type ProblemBody } from '../../schema/errors.ts';
import { API_VERSION, signRequest } from '../../schema/signing.ts';
import { Sessions } from './sessions.ts';
import { Files } from './files.ts';
import { Folders } from './folders.ts';
import { Admin, usage, type UsageReport } from './admin.ts';
import { signHandshake } from './inspect.ts';
import { SessionHandle } from './session.ts';
import type { SocketToken } from './types.ts';
import { watchSessions, type SessionWatch, type WatchOptions } from './watch.ts';

export interface ClientOptions {
  /** One manager address, e.g. `http://127.0.0.1:8081`. */
  endpoint?: string;
  /** Several manager addresses, tried in order (with `endpoint`, that one comes first). */
  endpoints?: string[];
  accessKey: string;
  secretKey: string;
  /** Sent as `X-BackendAI-Version`; default {@link API_VERSION}. */
  apiVersion?: string;
  /** Per-request limit for the whole exchange, answer body included; default 120 s. */
  timeoutMs?: number;
}

export type QueryValue = string | number | boolean | undefined;

export interface RequestOptions {
  /** Query parameters; undefined values are left out. */
  query?: Record<string, QueryValue>;
  /** Sent as JSON. */
  body?: unknown;
  /** Overrides the client's timeoutMs for this request. */
  timeoutMs?: number;
}

// Errors that mean the request never reached a manager, so trying the next one cannot run an
// operation twice. A reset or timeout after connecting is not among them: it is reported.
const CONNECT_FAILURES = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT',
]);

interface Answer { res: Response; text: string }

function connectFailureCode(err: unknown): string | undefined {
  if (!(err instanceof TypeError)) return undefined; // fetch reports network errors as TypeError with a cause
  const cause = err.cause as { code?: string; errors?: { code?: string }[] } | undefined;
  // Happy-eyeballs connects fail with an AggregateError of one error per address.
  const code = cause?.code ?? cause?.errors?.[0]?.code;
  return code && CONNECT_FAILURES.has(code) ? code : undefined;
}

/**
 * A signed connection to one or more managers.
 *
 * @example
 * const client = new Client({ endpoint: 'http://127.0.0.1:8081', accessKey, secretKey });
 * const { sessionName } = await client.sessions.create({ image: 'python' });
 */
export class Client {
  /** Session routes (`/session...`). */
  readonly sessions: Sessions;
  readonly endpoints: readonly string[];
  readonly apiVersion: string;
  readonly timeoutMs: number;
  readonly #accessKey: string;
  readonly #secretKey: string;
  #current = 0;

  /**
   * @example
   * new Client({ endpoints: ['http://m1:8081', 'http://m2:8081'], accessKey: 'AK...', secretKey: '...' })
   */
  constructor(opts: ClientOptions) {
    const endpoints = [...(opts.endpoint ? [opts.endpoint] : []), ...(opts.endpoints ?? [])];
    if (!endpoints.length) throw new TypeError('Client: give endpoint or endpoints');
    for (const e of endpoints) {
      let url: URL;
      try { url = new URL(e); } catch { throw new TypeError(`Client: not a URL: ${JSON.stringify(e)}`); }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`Client: not an http(s) URL: ${e}`);
    }
    if (!opts.accessKey || !opts.secretKey) throw new TypeError('Client: accessKey and secretKey are required');
    this.endpoints = endpoints;
    this.#accessKey = opts.accessKey;
    this.#secretKey = opts.secretKey;
    this.apiVersion = opts.apiVersion ?? API_VERSION;
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.sessions = new Sessions(this);
  }

  /**
   * The manager that answered last; requests go there first.
   *
   * @example
   * console.log(`connected to ${client.endpoint}`);
   */
  get endpoint(): string { return this.endpoints[this.#current]; }

  /**
   * Admin routes (`/admin/...`): keypairs, resource policies, jobs (an admin keypair).
   *
   * @example
   * const kp = await client.admin.createKeypair({ email: 'ann@example.com' });
   */
  get admin(): Admin { return new Admin(this); }

  /**
   * The caller's usage per hour in [start, end) (`GET /resource/usage`); admins may name `ownerAccessKey`.
   *
   * @example
   * const u = await client.usage({ start: new Date(Date.now() - 86400_000), end: new Date() });
   * console.log(u.total.cpu_used_ms);
   */
  usage(opts: { start: Date; end: Date; ownerAccessKey?: string }): Promise<UsageReport> { return usage(this, opts); }

  /**
   * Watch sessions' lifecycle events (socket.io `/watch`) as an async iterator. It reconnects by
   * itself and resumes after the last seq it delivered, so each event arrives once.
   *
   * @example
   * const w = client.watch({ sessionId: s.sessionId, sinceSeq: 0 });
   * for await (const e of w) {
   *   console.log(e.seq, e.name);
   *   if (e.name === 'session_terminated') w.close();
   * }
   */
  watch(opts: WatchOptions = {}): SessionWatch {
    const endpoint = this.endpoint;
    return watchSessions(endpoint, () => signHandshake({ endpoint, accessKey: this.#accessKey, secretKey: this.#secretKey, apiVersion: this.apiVersion }), opts);
  }

  /**
   * A short-lived token (`POST /auth/token`, default 300 s, at most 3600) that authenticates a
   * socket.io handshake without the secret key: hand it to a process or a browser page that
   * should watch but not hold the keypair. It acts for this client's keypair.
   *
   * @example
   * const { token } = await client.socketToken({ ttl: 600 });
   * const w = watchSessions(client.endpoint, () => ({ token }), { sinceSeq: 0 });
   */
  socketToken(opts: { ttl?: number } = {}): Promise<SocketToken> {
    return this.request<SocketToken>('POST', '/auth/token', { body: opts.ttl === undefined ? {} : { ttl: opts.ttl } });
  }

  /**
   * One session as an object: `execute(code)` iterates its output, `watch()` its events.
   *
   * @example
   * const s = client.session('demo');
   * for await (const [, data] of s.execute('print(6 * 7)')) process.stdout.write(data); // 42
   */
  session(nameOrId: string): SessionHandle { return new SessionHandle(this, nameOrId); }

  /**
   * Virtual folder routes (`/folders...`).
   *
   * @example
   * await client.folders.create('datasets');
   * await client.folders.upload('datasets', 'train.csv', '/tmp/train.csv');
   */
  get folders(): Folders { return new Folders(this); }

  /** File routes (`/session/{name}/upload|download|files`), e.g. `await client.files.listFiles('my-sess')`. */
  get files(): Files { return new Files(this, (parts) => signRequest({ ...parts, accessKey: this.#accessKey, secretKey: this.#secretKey })); }

  /**
   * Send one signed request and return the parsed JSON answer (text for non-JSON answers,
   * undefined for an empty one). A problem answer is thrown as its typed error class
   * (`SessionNotFound`, `AuthorizationFailed`, ...). When a manager refuses the connection, or
   * answers as a standby (503 naming the leader), the next one is tried; `ServiceUnavailable` when none can be reached or the time runs out.
   *
   * @example
   * const info = await client.request<SessionInfo>('GET', '/session/my-sess');
   * await client.request('DELETE', '/session/my-sess', { query: { forced: true } });
   */
  async request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    method = method.toUpperCase(); // fetch upper-cases GET/POST/... itself but sends `patch` as is
    const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    // The manager that answered last first, then the others in the given order.
    const order = [this.#current, ...this.endpoints.keys()].filter((i, n, all) => all.indexOf(i) === n);
    const refused: string[] = [];
    for (const i of order) {
      const url = this.#url(this.endpoints[i], path, opts.query);
      let answer: Answer;
      try {
        answer = await this.#send(method, url, body, opts.timeoutMs ?? this.timeoutMs);
      } catch (err) {
        const code = connectFailureCode(err);
        if (!code) throw err;
        refused.push(`${this.endpoints[i]} (${code})`);
        continue;
      }
      // A standby manager answers 503 naming the leader: follow the election to the next address.
      if (answer.res.status === 503 && isStandbyAnswer(answer.text) && order.length > 1) {
        refused.push(`${this.endpoints[i]} (standby)`);
        continue;
      }
      this.#current = i;
      return parseAnswer<T>(method, url, answer);
    }
    throw new ServiceUnavailable(`cannot reach a manager: ${refused.join(', ')}`);
  }

  #url(endpoint: string, path: string, query: RequestOptions['query']): URL {
    const base = new URL(endpoint);
    // Keep a path prefix of the endpoint (a manager behind a reverse proxy at /api).
    const url = new URL(base.pathname.replace(/\/+$/, '') + path, base);
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) params.set(k, String(v));
    url.search = params.toString();
    return url;
  }

  async #send(method: string, url: URL, body: string | undefined, timeoutMs: number): Promise<Answer> {
    const date = new Date().toISOString();
    const contentType = body === undefined ? undefined : 'application/json';
    // fetch sends `url.host` as the Host header (it ignores one we set) and the request target as
    // pathname + search, both as the URL serialises them: sign exactly those.
    const { authorization } = signRequest({
      method, pathWithQuery: url.pathname + url.search, date, host: url.host, contentType,
      version: this.apiVersion, accessKey: this.#accessKey, secretKey: this.#secretKey,
    });
    const headers: Record<string, string> = { Date: date, 'X-BackendAI-Version': this.apiVersion, Authorization: authorization };
    if (contentType) headers['Content-Type'] = contentType;
    try {
      // The answer is read inside the try so the timeout also covers a stalled body.
      const res = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(timeoutMs) });
      return { res, text: await res.text() };
    } catch (err) {
      if ((err as Error).name === 'TimeoutError') throw new ServiceUnavailable(`no answer from ${url.origin} within ${timeoutMs} ms (${method} ${url.pathname})`);
      throw err;
    }
  }
}

/** JSON (or text) of a 2xx answer; a problem answer thrown as its typed error class. */
function isStandbyAnswer(text: string): boolean {
  try {
    const body = JSON.parse(text) as { data?: unknown };
    return typeof body.data === 'object' && body.data !== null && 'leader' in body.data;
  } catch { return false; }
}

function parseAnswer<T>(method: string, url: URL, { res, text }: Answer): T {
  const json = /^application\/([\w.-]+\+)?json\b/i.test(res.headers.get('content-type') ?? '');
  let data: unknown = text || undefined;
  if (json && text) {
    try { data = JSON.parse(text); } catch {
      if (res.ok) throw new InternalServerError(`malformed JSON in the answer to ${method} ${url.pathname}`);
      data = undefined;
    }
  }
  if (res.ok) return data as T;
  const problem = data !== null && typeof data === 'object' ? data as Partial<ProblemBody> : { title: `HTTP ${res.status} ${res.statusText}`.trim() };
  throw errorFromProblem(res.status, problem);
}
