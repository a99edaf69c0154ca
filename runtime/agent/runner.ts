// The agent's side of a kernel runner (images/runner/PROTOCOL.md): JSON lines over the
// container's attached stdin/stdout. Output is kept per run until the manager has taken it
// (an RPC reply), and only then acknowledged to the runner, so an agent restart loses nothing:
// after re-attaching, the runner replays what was never acknowledged.
//
// Output stays in the form the runner sends it: the body of the `data` string literal, JSON-escaped
// UTF-8 (schema/agent-rpc.ts ConsoleChunk). An `out` line is not parsed whole: its head (op, seq,
// id, stream) is, and its data is checked to be a well-formed JSON string body, then kept as bytes.
import { isUtf8 } from 'node:buffer';
import type { Readable, Writable } from 'node:stream';
import type { ConsoleChunk, ExecuteReply } from '../../schema/agent-rpc.ts';
import type { Logger } from '../log.ts';

export type RunStatus = ExecuteReply['status'];

interface Run {
  runId: string;
  items: Array<{ seq: number; stream: ConsoleChunk[0]; json: Buffer }>;
  bytes: number;
  finished: boolean;
  exitCode: number | null;
  waitingInput: boolean;
  buildFinished: boolean;
  timedOut: boolean;
  /** Highest runner seq seen for this run, and the highest acknowledged. */
  maxSeq: number;
  ackedSeq: number;
  timer?: NodeJS.Timeout;
  /** Woken whenever something arrives for this run. */
  wake?: () => void;
}

/** A refused run request, with a stable code the manager maps to an HTTP status. */
export class RunnerError extends Error {
  constructor(readonly code: 'run-in-progress' | 'unknown-run' | 'not-waiting-input', message: string) { super(message); }
}

export type RunReply = ExecuteReply;

/** A reply goes out at the latest after this long, or earlier when this much output is pending. */
export const FLUSH_MS = 1500;
export const FLUSH_BYTES = 4 * 1024 * 1024;
/** After a re-attach, how long to collect the replay before processing it in seq order. */
export const REPLAY_SETTLE_MS = 300;
/** lastSeq after a re-attach that replayed nothing: the next seq, whatever it is, is taken as the next. */
const RESYNC = -1;

export class KernelRunner {
  private readonly runs = new Map<string, Run>();
  private active: string | undefined;
  private closed = false;
  /** Bytes of a line whose end has not arrived yet. */
  private rest: Buffer[] = [];
  /** Resolves once the runner has said it is ready (or replayed after a re-attach). */
  readonly ready: Promise<void>;
  private markReady!: () => void;

  constructor(private readonly kernelId: string, private readonly stdin: Writable, stdout: Readable, private readonly log: Logger, reattached: boolean) {
    this.ready = new Promise((r) => { this.markReady = r; });
    stdout.on('data', (chunk: Buffer) => this.onData(chunk));
    stdout.on('end', () => { this.closed = true; });
    if (reattached) {
      // The runner announced itself long ago. Ask for everything never acknowledged; what it
      // writes between this attach and reading the request comes both directly and replayed,
      // and this agent does not know where the unacknowledged part starts: hold what arrives
      // for a moment, then start from the lowest seq and go on one by one.
      this.settling = [];
      this.send({ op: 'replay', from: 0 });
      setTimeout(() => this.settle(), REPLAY_SETTLE_MS).unref();
    }
  }

  get busy(): boolean { return this.active !== undefined && !this.runs.get(this.active)?.finished; }

  /** Start a run (query or batch). One at a time per kernel. */
  async start(runId: string, req: { mode: 'query' | 'batch'; code: string; build?: string | null; exec?: string; timeoutMs?: number }): Promise<void> {
    await this.ready;
    if (this.busy) throw new RunnerError('run-in-progress', `kernel ${this.kernelId} is still running ${this.active}`);
    const run: Run = { runId, items: [], bytes: 0, finished: false, exitCode: null, waitingInput: false, buildFinished: false, timedOut: false, maxSeq: 0, ackedSeq: 0 };
    this.runs.set(runId, run);
    this.active = runId;
    if (req.timeoutMs) {
      run.timer = setTimeout(() => { run.timedOut = true; this.send({ op: 'interrupt', id: runId }); }, req.timeoutMs);
      run.timer.unref();
    }
    this.send(req.mode === 'query'
      ? { op: 'exec', id: runId, mode: 'query', code: req.code }
      : { op: 'exec', id: runId, mode: 'batch', build: req.build ?? null, exec: req.exec ?? req.code });
  }

  input(runId: string, text: string): void {
    const run = this.runs.get(runId);
    if (!run || run.finished) throw new RunnerError('not-waiting-input', `no run ${runId} waiting for input`);
    run.waitingInput = false;
    this.send({ op: 'input', id: runId, text });
  }

  interrupt(): void {
    if (this.active) this.send({ op: 'interrupt', id: this.active });
  }

  /** Wait for output (up to FLUSH_MS, less when the run ends or much is pending), then hand it over. */
  async collect(runId: string, maxWaitMs = FLUSH_MS): Promise<RunReply> {
    await this.ready;
    let run = this.runs.get(runId);
    if (!run) {
      // After an agent restart the run is known again only once the runner replays it.
      await new Promise((r) => setTimeout(r, Math.min(200, maxWaitMs)));
      run = this.runs.get(runId);
      if (!run) throw new RunnerError('unknown-run', `unknown run ${runId}`);
    }
    const deadline = Date.now() + maxWaitMs;
    while (!run.finished && !run.waitingInput && !run.buildFinished && run.bytes < FLUSH_BYTES && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, deadline - Date.now());
        run!.wake = () => { clearTimeout(t); resolve(); };
      });
      run.wake = undefined;
    }
    return this.take(run);
  }

  close(): void { this.closed = true; for (const r of this.runs.values()) clearTimeout(r.timer); }

  // ---- internals

  private take(run: Run): RunReply {
    // At most about FLUSH_BYTES per reply (the runner can be far ahead of a slow client, and a
    // socket.io message has a size limit); the rest waits for the next poll.
    const items = run.items;
    let n = 0;
    let bytes = 0;
    while (n < items.length && bytes < FLUSH_BYTES) bytes += items[n++].json.length;
    const taken = items.splice(0, n);
    run.bytes -= bytes;
    const more = items.length > 0;
    const console = coalesce(taken);
    let status: RunStatus = 'continued'; // always, while output is left over
    if (!more) {
      if (run.finished) status = run.timedOut ? 'exec-timeout' : 'finished';
      else if (run.waitingInput) status = 'waiting-input';
      else if (run.buildFinished) { status = 'build-finished'; run.buildFinished = false; }
    }
    // Handed to the manager (output and the status messages read so far): the runner may forget
    // them. With output left over, only up to the last item handed over.
    const upto = more ? taken[taken.length - 1].seq : run.maxSeq;
    if (upto > run.ackedSeq) { this.send({ op: 'ack', upto }); run.ackedSeq = upto; }
    if (run.finished && !more) {
      this.runs.delete(run.runId);
      clearTimeout(run.timer);
      if (this.active === run.runId) this.active = undefined;
    }
    return { runId: run.runId, status, exitCode: run.finished && !more ? run.exitCode : null, console };
  }

  private lastSeq = 0;

  private send(msg: object): void {
    if (this.closed) return;
    this.stdin.write(`${JSON.stringify(msg)}\n`);
  }

  /** JSON lines, split on the newline byte: each line is decoded once, whole (no chunk-wise string concatenation). */
  private onData(chunk: Buffer): void {
    let pos = 0;
    for (;;) {
      const nl = chunk.indexOf(10, pos);
      if (nl < 0) {
        if (pos < chunk.length) this.rest.push(chunk.subarray(pos));
        return;
      }
      let line = chunk.subarray(pos, nl);
      if (this.rest.length) {
        this.rest.push(line);
        line = Buffer.concat(this.rest);
        this.rest = [];
      }
      pos = nl + 1;
      this.onLine(line);
    }
  }

  private onLine(line: Buffer): void {
    const out = outLine(line);
    if (out) { this.onMessage(out.head, out.json); return; }
    // Anything else is parsed whole; invalid UTF-8 becomes U+FFFD here.
    const text = line.toString('utf8');
    if (!text.trim()) return;
    let msg: Record<string, unknown>;
    try { msg = JSON.parse(text); } catch { this.log.warn({ kernelId: this.kernelId, line: text.slice(0, 200) }, 'unreadable runner line'); return; }
    this.onMessage(msg);
  }

  private replayAskedFor = -1;
  /** Messages held while a re-attach settles (undefined once settled). */
  private settling: Array<Record<string, unknown>> | undefined;

  private settle(): void {
    const held = this.settling ?? [];
    this.settling = undefined;
    held.sort((a, b) => (a.seq as number) - (b.seq as number));
    // Nothing replayed: everything before was acknowledged, so whatever seq comes next (the
    // runner's count went on while this agent was away) is the next one (RESYNC).
    this.lastSeq = held.length ? (held[0].seq as number) - 1 : RESYNC;
    for (const m of held) this.onMessage(m, Buffer.isBuffer(m.json) ? m.json : undefined);
    this.markReady();
  }

  /** `json`: an `out` message's data, already as a checked JSON string body. */
  private onMessage(msg: Record<string, unknown>, json?: Buffer): void {
    if (msg.op === 'ready') { this.markReady(); return; }
    if (msg.op === 'pong' || msg.op === 'error') {
      if (msg.op === 'error') this.log.warn({ kernelId: this.kernelId, msg: msg.msg }, 'runner refused a request');
      return;
    }
    const seq = typeof msg.seq === 'number' ? msg.seq : 0;
    if (!seq) return;
    if (this.settling) { this.settling.push(json ? { ...msg, json } : msg); return; }
    if (this.lastSeq === RESYNC) this.lastSeq = seq - 1;
    // One by one (PROTOCOL.md): a lower seq is a repeat; a gap is resent by asking for a replay.
    if (seq <= this.lastSeq) return;
    if (seq !== this.lastSeq + 1) {
      // One request per gap (each replay resends everything unacknowledged).
      if (this.replayAskedFor !== this.lastSeq) { this.replayAskedFor = this.lastSeq; this.send({ op: 'replay', from: this.lastSeq }); }
      return;
    }
    this.lastSeq = seq;
    const runId = typeof msg.id === 'string' || typeof msg.id === 'number' ? String(msg.id) : undefined;
    if (!runId) return;
    let run = this.runs.get(runId);
    if (!run) {
      // Replayed after an agent restart: the run lives on.
      run = { runId, items: [], bytes: 0, finished: false, exitCode: null, waitingInput: false, buildFinished: false, timedOut: false, maxSeq: 0, ackedSeq: 0 };
      this.runs.set(runId, run);
      this.active = runId;
    }
    if (seq > run.maxSeq) run.maxSeq = seq;
    switch (msg.op) {
      case 'out': {
        const stream = msg.stream === 'stderr' ? 'stderr' : 'stdout';
        const body = json ?? Buffer.from(JSON.stringify(typeof msg.data === 'string' ? msg.data : '').slice(1, -1));
        run.items.push({ seq, stream, json: body });
        run.bytes += body.length;
        break;
      }
      case 'waiting-input': run.waitingInput = true; break;
      case 'build-finished': run.buildFinished = true; break;
      case 'finished':
        run.finished = true;
        run.exitCode = typeof msg.exitCode === 'number' ? msg.exitCode : null;
        clearTimeout(run.timer);
        break;
      default: return;
    }
    run.wake?.();
  }
}

/** Adjacent items of the same stream become one, as Backend.AI's console does. */
function coalesce(items: ReadonlyArray<{ stream: ConsoleChunk[0]; json: Buffer }>): ConsoleChunk[] {
  const out: ConsoleChunk[] = [];
  let parts: Buffer[] = [];
  const close = () => { if (parts.length > 1) out[out.length - 1][1] = Buffer.concat(parts); };
  for (const { stream, json } of items) {
    const last = out[out.length - 1];
    if (last && last[0] === stream && stream !== 'media') { parts.push(json); continue; }
    close();
    out.push([stream, json]);
    parts = [json];
  }
  close();
  return out;
}

const OUT_HEAD = Buffer.from('{"op":"out",');
const DATA_KEY = Buffer.from(',"data":"');

/**
 * An `out` line as the runners write it, data last (`{"op":"out",...,"data":"<body>"}`), read
 * without parsing its data: the head is parsed, the body checked. Anything else (another
 * layout, a body that is not a well-formed JSON string body): undefined, and it is parsed whole.
 * The first `,"data":"` is structural (a quote inside a string is always escaped), and a checked
 * body has no bare quote, so it runs to the closing `"}`: the same data JSON.parse would find.
 */
function outLine(line: Buffer): { head: Record<string, unknown>; json: Buffer } | undefined {
  const n = line.length;
  if (n < OUT_HEAD.length + DATA_KEY.length + 2 || line[n - 1] !== 0x7d || line[n - 2] !== 0x22 || line.compare(OUT_HEAD, 0, OUT_HEAD.length, 0, OUT_HEAD.length) !== 0) return undefined;
  const at = line.indexOf(DATA_KEY);
  if (at < 0) return undefined;
  const json = line.subarray(at + DATA_KEY.length, n - 2);
  if (!isJsonStringBody(json)) return undefined;
  try {
    const head = JSON.parse(`${line.toString('utf8', 0, at)}}`) as unknown;
    return head && typeof head === 'object' && !Array.isArray(head) ? { head: head as Record<string, unknown>, json } : undefined;
  } catch { return undefined; }
}

const HEX = new Uint8Array(256);
for (const c of '0123456789abcdefABCDEF') HEX[c.charCodeAt(0)] = 1;

/** Whether `b` can stand between the quotes of a JSON string: valid UTF-8, no control character or bare quote, valid escapes. */
export function isJsonStringBody(b: Uint8Array): boolean {
  const n = b.length;
  for (let i = 0; i < n; i++) {
    const c = b[i];
    if (c > 0x5c || (c > 0x22 && c < 0x5c)) continue; // the common case first
    if (c === 0x5c) {
      const e = b[++i];
      // \" \\ \/ \b \f \n \r \t
      if (e === 0x6e || e === 0x22 || e === 0x5c || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x72 || e === 0x74) continue;
      if (e === 0x75 && i + 4 < n && HEX[b[i + 1]] && HEX[b[i + 2]] && HEX[b[i + 3]] && HEX[b[i + 4]]) { i += 4; continue; }
      return false;
    }
    if (c < 0x20 || c === 0x22) return false;
  }
  return isUtf8(b);
}
