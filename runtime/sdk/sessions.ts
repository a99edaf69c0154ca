// The session routes of API.md, as `client.sessions`.
import { randomBytes } from 'node:crypto';
import type { Client } from './client.ts';
import type {
  CreateSessionOptions, CreateSessionResult, DestroySessionResult, ExecuteRequest, ExecuteResult, ListSessionsOptions, RunOptions,
  SessionInfo, SessionList,
} from './types.ts';

const sessionPath = (nameOrId: string): string => `/session/${encodeURIComponent(nameOrId)}`;

/** Session routes; use them as `client.sessions`. */
export class Sessions {
  readonly #client: Client;
  constructor(client: Client) { this.#client = client; }

  /**
   * Create a session (`POST /session`). Unless `enqueueOnly`, the manager answers once the
   * session runs or `maxWaitSeconds` pass (then `status` is `TIMEOUT`), so the request's own
   * time limit is the client's plus that wait.
   *
   * @example
   * const s = await client.sessions.create({ image: 'python', resources: { cpu: 1, mem: '1g' } });
   * console.log(s.sessionName, s.status); // sess-1f2e3d4c RUNNING
   */
  create(opts: CreateSessionOptions): Promise<CreateSessionResult> {
    const waitMs = opts.enqueueOnly ? 0 : (opts.maxWaitSeconds ?? 0) * 1000;
    return this.#client.request<CreateSessionResult>('POST', '/session', {
      timeoutMs: this.#client.timeoutMs + waitMs,
      body: {
        name: opts.name ?? `sess-${randomBytes(4).toString('hex')}`,
        image: opts.image,
        type: opts.type,
        clusterSize: opts.clusterSize,
        clusterMode: opts.clusterMode,
        config: { resources: opts.resources, mounts: opts.mounts, mount_map: opts.mountMap, environ: opts.environ, scalingGroup: opts.resourceGroup },
        enqueueOnly: opts.enqueueOnly,
        maxWaitSeconds: opts.maxWaitSeconds,
        reuseIfExists: opts.reuseIfExists,
        startupCommand: opts.startupCommand,
        tag: opts.tag,
      },
    });
  }

  /**
   * The caller's sessions (`GET /session`), one page of them and the total count.
   *
   * @example
   * const { items, total } = await client.sessions.list({ status: ['PENDING', 'RUNNING'], limit: 20 });
   */
  list(opts: ListSessionsOptions = {}): Promise<SessionList> {
    const status = Array.isArray(opts.status) ? opts.status.join(',') : opts.status;
    return this.#client.request<SessionList>('GET', '/session', { query: { status, limit: opts.limit, offset: opts.offset } });
  }

  /**
   * One session's details (`GET /session/{name or id}`), kernels and status history included.
   *
   * @example
   * const info = await client.sessions.get('my-sess');
   * for (const k of info.kernels) console.log(k.hostname, k.status);
   */
  get(nameOrId: string): Promise<SessionInfo> {
    return this.#client.request<SessionInfo>('GET', sessionPath(nameOrId));
  }

  /**
   * Destroy a session (`DELETE /session/{name or id}`); idempotent. `forced` skips the graceful stop.
   *
   * @example
   * const { stats } = await client.sessions.destroy('my-sess', { forced: true });
   */
  destroy(nameOrId: string, opts: { forced?: boolean } = {}): Promise<DestroySessionResult> {
    return this.#client.request<DestroySessionResult>('DELETE', sessionPath(nameOrId), { query: { forced: opts.forced || undefined } });
  }

  /**
   * Restart the session's kernels, keeping the session (`PATCH /session/{name or id}`).
   *
   * @example
   * await client.sessions.restart('my-sess');
   */
  async restart(nameOrId: string): Promise<void> {
    await this.#client.request('PATCH', sessionPath(nameOrId));
  }

  /**
   * The main kernel's container output (`GET /session/{name}/logs`).
   *
   * @example
   * process.stdout.write(await client.sessions.logs('my-sess'));
   */
  async logs(nameOrId: string): Promise<string> {
    const answer = await this.#client.request<{ result: { logs: string } }>('GET', `${sessionPath(nameOrId)}/logs`);
    return answer.result.logs;
  }

  /**
   * One execute request (`POST /session/{name}`), as Backend.AI clients send it. The reply comes
   * within ~2 s: `continued` means poll again with `mode: 'continue'` and the same `runId`.
   *
   * @example
   * const r = await client.sessions.execute('my-session', { mode: 'query', code: 'print(6 * 7)' });
   * console.log(r.status, r.console); // finished [['stdout', '42\n']]
   */
  async execute(nameOrId: string, req: ExecuteRequest): Promise<ExecuteResult> {
    const answer = await this.#client.request<{ result: ExecuteResult }>('POST', sessionPath(nameOrId), {
      body: { mode: req.mode, code: req.code ?? '', runId: req.runId ?? null, options: req.options ?? {} },
    });
    return answer.result;
  }

  /**
   * Run code to the end: the first request, then `continue` polls until `finished` (or
   * `exec-timeout`), handing each piece of output to `onOutput` as it comes and asking
   * `onInput` for a line when the code waits for input. Returns the last result.
   *
   * @example
   * const r = await client.sessions.run('my-session', 'for i in range(3): print(i)', { onOutput: (s, d) => process.stdout.write(d) });
   * console.log(r.exitCode); // 0
   */
  async run(nameOrId: string, code: string, opts: RunOptions = {}): Promise<ExecuteResult> {
    let r = await this.execute(nameOrId, { mode: opts.mode ?? 'query', code, options: opts.options });
    for (;;) {
      for (const [stream, data] of r.console) opts.onOutput?.(stream, data);
      if (r.status === 'finished' || r.status === 'exec-timeout') return r;
      if (r.status === 'waiting-input') {
        if (!opts.onInput) throw new Error('the code waits for input and no onInput was given');
        r = await this.execute(nameOrId, { mode: 'input', code: await opts.onInput(), runId: r.runId });
      } else {
        r = await this.execute(nameOrId, { mode: 'continue', runId: r.runId });
      }
    }
  }

  /**
   * Interrupt the code running in the session (`POST /session/{name}/interrupt`).
   *
   * @example
   * await client.sessions.interrupt('my-session');
   */
  async interrupt(nameOrId: string): Promise<void> {
    await this.#client.request('POST', `${sessionPath(nameOrId)}/interrupt`);
  }
}
