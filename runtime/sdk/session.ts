// One session as an object (`client.session(nameOrId)`): its code runs as async iterators of
// output, its events as a watch, and the usual calls without repeating its name.
import type { Client } from './client.ts';
import type { ConsoleItem, DestroySessionResult, ExecuteResult, RunOptions, SessionInfo } from './types.ts';
import type { SessionWatch, WatchOptions } from './watch.ts';

/** A run in progress: iterate its output as it is produced; `result` settles when it ends. */
export interface Execution extends AsyncIterable<ConsoleItem> {
  /** The final answer (`finished` or `exec-timeout`, with the exit code). */
  readonly result: Promise<ExecuteResult>;
}

export class SessionHandle {
  readonly #client: Client;
  constructor(client: Client, readonly ref: string) { this.#client = client; }

  /**
   * Run code (query mode by default) and iterate its output items, `[stream, data]`, as they
   * arrive; `result` gives the exit code once it ends. Output is buffered until read, so the
   * iterator may be consumed at any pace (or not at all: await `result`).
   *
   * @example
   * const run = client.session('demo').execute('for i in range(3): print(i)');
   * for await (const [stream, data] of run) process[stream === 'stderr' ? 'stderr' : 'stdout'].write(data);
   * console.log((await run.result).exitCode); // 0
   */
  execute(code: string, opts: Omit<RunOptions, 'onOutput'> = {}): Execution {
    const queue: ConsoleItem[] = [];
    let wake: (() => void) | undefined;
    let ended = false;
    const result = this.#client.sessions.run(this.ref, code, { ...opts, onOutput: (s, d) => { queue.push([s, d]); wake?.(); } })
      .finally(() => { ended = true; wake?.(); });
    result.catch(() => undefined); // surfaced by the iterator or by awaiting result
    return {
      result,
      async *[Symbol.asyncIterator]() {
        for (;;) {
          while (queue.length) yield queue.shift()!;
          if (ended) { await result; return; }
          await new Promise<void>((r) => { wake = r; });
          wake = undefined;
        }
      },
    };
  }

  /**
   * This session's lifecycle events (and, with `output: true`, its runs' output) as an async
   * iterator that resumes after reconnects. The session is looked up first, to watch it by id.
   *
   * @example
   * const w = await client.session('demo').watch({ sinceSeq: 0 });
   * for await (const e of w) { console.log(e.name); if (e.name === 'session_terminated') w.close(); }
   */
  async watch(opts: Omit<WatchOptions, 'sessionId'> = {}): Promise<SessionWatch> {
    const info = await this.info();
    return this.#client.watch({ ...opts, sessionId: info.sessionId });
  }

  /**
   * The session's details.
   *
   * @example
   * console.log((await client.session('demo').info()).status);
   */
  info(): Promise<SessionInfo> { return this.#client.sessions.get(this.ref); }

  /**
   * Destroy the session.
   *
   * @example
   * await client.session('demo').destroy();
   */
  destroy(opts: { forced?: boolean } = {}): Promise<DestroySessionResult> { return this.#client.sessions.destroy(this.ref, opts); }

  /**
   * Interrupt the code running in it.
   *
   * @example
   * await client.session('demo').interrupt();
   */
  interrupt(): Promise<void> { return this.#client.sessions.interrupt(this.ref); }
}
