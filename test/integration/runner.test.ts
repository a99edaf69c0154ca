// The kernel runners' execution protocol (images/runner/PROTOCOL.md) against real containers of
// both kernel images, talked to exactly like the agent does: container created with OpenStdin,
// attach with hijack before start, demuxStream, JSON lines both ways.
import { createHash } from 'node:crypto';
import { PassThrough } from 'node:stream';
import Docker from 'dockerode';
import * as assert from 'uvu/assert';
import { buildImages } from '../../images/build.ts';
import { suite } from '../helpers/suite.ts';

const docker = new Docker();
const MiB = 1024 * 1024;

interface Msg {
  op: string;
  seq?: number;
  id?: unknown;
  stream?: 'stdout' | 'stderr';
  data?: string;
  exitCode?: number;
  prompt?: string;
  msg?: string;
  [k: string]: unknown;
}

type Hijacked = NodeJS.ReadWriteStream & { destroy(): void };

/**
 * One attach to a runner. Applies the agent's rule for sequenced messages: a message is taken
 * only if its seq is exactly one more than the last taken (repeats and messages past a gap are
 * counted and dropped; after a replay they come again in order).
 */
class Conn {
  private partial: Buffer[] = [];
  private queue: Msg[] = [];
  private wake: (() => void) | null = null;
  lastSeq: number;
  /** seq of every sequenced message seen on this attach, before the rule above. */
  seenSeqs: number[] = [];
  repeats = 0;
  gaps = 0;
  badLines: string[] = [];
  log = '';
  autoAck = true;
  acked = 0;
  /** When set, `out` data goes here instead of the queue (for the big transfers). */
  sink: ((m: Msg) => void) | null = null;
  ended = false;

  private constructor(private readonly stream: Hijacked, lastSeq: number) {
    this.lastSeq = lastSeq;
    this.acked = lastSeq;
  }

  static async attach(container: Docker.Container, lastSeq = 0): Promise<Conn> {
    const stream = (await container.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true })) as unknown as Hijacked;
    const conn = new Conn(stream, lastSeq);
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    docker.modem.demuxStream(stream, stdout, stderr);
    stdout.on('data', (b: Buffer) => conn.onData(b));
    stderr.on('data', (b: Buffer) => { conn.log += b.toString(); });
    stream.on('error', () => undefined);
    stream.on('end', () => { conn.ended = true; conn.notify(); });
    stream.on('close', () => { conn.ended = true; conn.notify(); });
    return conn;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private onData(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      if (nl < 0) {
        if (start < chunk.length) this.partial.push(chunk.subarray(start));
        return;
      }
      let line = chunk.subarray(start, nl);
      if (this.partial.length) {
        this.partial.push(line);
        line = Buffer.concat(this.partial);
        this.partial = [];
      }
      start = nl + 1;
      this.onLine(line.toString('utf8'));
    }
  }

  private onLine(text: string): void {
    let m: Msg;
    try {
      m = JSON.parse(text) as Msg;
    } catch {
      this.badLines.push(text.slice(0, 200));
      return;
    }
    if (typeof m.seq === 'number') {
      this.seenSeqs.push(m.seq);
      if (m.seq <= this.lastSeq) { this.repeats++; return; }
      if (m.seq > this.lastSeq + 1) { this.gaps++; return; }
      this.lastSeq = m.seq;
      if (this.autoAck) this.ack();
    }
    if (this.sink && m.op === 'out') this.sink(m);
    else this.queue.push(m);
    this.notify();
  }

  ack(upto = this.lastSeq): void {
    if (upto <= this.acked) return;
    this.acked = upto;
    this.send({ op: 'ack', upto });
  }

  sendRaw(bytes: Buffer): void {
    this.stream.write(bytes);
  }

  send(msg: object | string): void {
    this.stream.write(typeof msg === 'string' ? `${msg}\n` : `${JSON.stringify(msg)}\n`);
  }

  /** The next message (in arrival order) matching `pred`; earlier ones are discarded. */
  async next(pred: (m: Msg) => boolean = () => true, ms = 10_000, what = 'message'): Promise<Msg> {
    const end = Date.now() + ms;
    for (;;) {
      while (this.queue.length) {
        const m = this.queue.shift()!;
        if (pred(m)) return m;
      }
      if (this.ended) throw new Error(`attach ended while waiting for ${what}; runner log: ${this.log}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${ms} ms; runner log: ${this.log}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => { clearTimeout(t); resolve(); };
      });
    }
  }

  /** Messages still queued (not yet taken by next()). */
  drain(): Msg[] {
    const q = this.queue;
    this.queue = [];
    return q;
  }

  detach(): void {
    this.stream.destroy();
  }
}

interface RunResult {
  msgs: Msg[];
  stdout: string;
  stderr: string;
  /** Output as [stream, text] with neighbours of the same stream merged: the interleaving. */
  chunks: Array<[string, string]>;
  exitCode: number;
}

/** Collects everything of one run up to its `finished`. */
async function collect(conn: Conn, id: unknown, ms = 20_000): Promise<RunResult> {
  const msgs: Msg[] = [];
  for (;;) {
    const m = await conn.next((x) => x.id === id, ms, `finished of run ${JSON.stringify(id)}`);
    msgs.push(m);
    if (m.op === 'finished') break;
  }
  const chunks: Array<[string, string]> = [];
  for (const m of msgs) {
    if (m.op !== 'out') continue;
    const last = chunks[chunks.length - 1];
    if (last && last[0] === m.stream) last[1] += m.data;
    else chunks.push([m.stream!, m.data!]);
  }
  const text = (s: string) => chunks.filter((c) => c[0] === s).map((c) => c[1]).join('');
  return { msgs, stdout: text('stdout'), stderr: text('stderr'), chunks, exitCode: msgs[msgs.length - 1].exitCode! };
}

let runCounter = 0;
const newId = () => `run-${process.pid}-${++runCounter}`;

async function query(conn: Conn, code: string, ms?: number): Promise<RunResult> {
  const id = newId();
  conn.send({ op: 'exec', id, mode: 'query', code });
  return collect(conn, id, ms);
}

async function batch(conn: Conn, build: string | null, exec: string, ms?: number): Promise<RunResult> {
  const id = newId();
  conn.send({ op: 'exec', id, mode: 'batch', build, exec });
  return collect(conn, id, ms);
}

/** A kernel container like the agent's (runtime/agent/docker.ts), attached before start. */
async function startKernel(image: string): Promise<{ container: Docker.Container; conn: Conn; ready: Msg }> {
  try {
    await docker.ping();
  } catch (e) {
    throw new Error(`Docker is not reachable (${(e as Error).message}): the runner tests need a Docker daemon`);
  }
  const container = await docker.createContainer({
    name: `flotilla-runner-test-${process.pid}-${image.replace(/\W/g, '-')}`,
    Image: image,
    WorkingDir: '/home/work',
    Labels: { 'ai.flotilla.test': 'runner' },
    OpenStdin: true, StdinOnce: false, AttachStdin: true, AttachStdout: true, AttachStderr: true, Tty: false,
    HostConfig: {
      Memory: 1024 * MiB,
      MemorySwap: 1024 * MiB,
      PidsLimit: 256,
      CapDrop: ['ALL'],
      CapAdd: ['CHOWN', 'SETUID', 'SETGID', 'FOWNER', 'DAC_OVERRIDE', 'KILL'],
      SecurityOpt: ['no-new-privileges'],
      NetworkMode: 'none',
    },
  });
  try {
    const conn = await Conn.attach(container);
    await container.start();
    const ready = await conn.next((m) => m.op === 'ready', 15_000, 'ready');
    return { container, conn, ready };
  } catch (e) {
    await container.remove({ force: true }).catch(() => undefined);
    throw e;
  }
}

async function removeKernel(container: Docker.Container | undefined): Promise<void> {
  await container?.remove({ force: true, v: true }).catch((e: { statusCode?: number }) => {
    if (e.statusCode !== 404) throw e;
  });
}

/** `n` lines of 100 bytes: an 8-digit counter (1-based), a space, 90 x's, a newline. */
function expectedLines(n: number): { length: number; sha256: string } {
  const h = createHash('sha256');
  const xs = 'x'.repeat(90);
  for (let i = 1; i <= n; i++) h.update(`${String(i).padStart(8, '0')} ${xs}\n`);
  return { length: n * 100, sha256: h.digest('hex') };
}

/** Streams a run's stdout through a hash (it may be large); stderr is kept. */
async function hashedRun(conn: Conn, start: (id: string) => void, ms: number) {
  const h = createHash('sha256');
  let length = 0;
  let outMessages = 0;
  let stderr = '';
  const id = newId();
  conn.sink = (m) => {
    if (m.id !== id) return;
    outMessages++;
    if (m.stream === 'stdout') { h.update(m.data!); length += Buffer.byteLength(m.data!); } else stderr += m.data;
  };
  const started = Date.now();
  try {
    start(id);
    const fin = await conn.next((m) => m.op === 'finished' && m.id === id, ms, 'finished');
    return { length, sha256: h.digest('hex'), stderr, exitCode: fin.exitCode!, seconds: (Date.now() - started) / 1000, outMessages };
  } finally {
    conn.sink = null;
  }
}

/** Requests a runner must answer with `error` (or ignore) without dying. */
async function malformed(conn: Conn, lang: 'python' | 'shell'): Promise<void> {
  const bad: Array<[string, unknown]> = [
    ['not json at all', null],
    ['{"op":"ping","id":1', null],
    ['[1,2,3]', null],
    ['"just a string"', null],
    ['{"op":"ping","id":2} trailing', null],
    ['{"id":3}', 3],
    ['{"op":"frobnicate","id":4}', 4],
    ['{"op":"exec","id":5}', 5],
    ['{"op":"exec","id":6,"mode":"query"}', 6],
    ['{"op":"exec","id":7,"mode":"batch","build":null}', 7],
    ['{"op":"exec","mode":"query","code":"1"}', null],
    ['{"op":"input","id":"nobody","text":"x"}', 'nobody'],
    ['{"op":"interrupt","id":"nobody"}', 'nobody'],
    ['{"op":"ack","upto":"x"}', null],
    ['{"op":"replay"}', null],
    ['{"op":"exec","id":"bad\\escape","mode":"query","code":"1"}', null],
  ];
  for (const [line, id] of bad) {
    conn.send(line);
    const m = await conn.next((x) => x.op === 'error' || x.op === 'pong', 5000, `error for ${line}`);
    assert.is(m.op, 'error', `error for ${line}`);
    assert.equal(m.id, id, `error id for ${line}`);
    assert.type(m.msg, 'string');
  }
  // Invalid UTF-8, control bytes and a blank line.
  conn.sendRaw(Buffer.from([0xff, 0xfe, 0x7b, 0x01, 0x0a]));
  conn.send('');
  await conn.next((x) => x.op === 'error', 5000, 'error for invalid bytes');
  // One run at a time.
  const first = newId();
  conn.send({ op: 'exec', id: first, mode: 'query', code: lang === 'python' ? 'import time; time.sleep(1)' : 'sleep 1' });
  conn.send({ op: 'exec', id: 'second', mode: 'query', code: lang === 'python' ? 'print(1)' : 'echo 1' });
  const e = await conn.next((x) => x.op === 'error', 5000, 'error for a second exec');
  assert.is(e.id, 'second');
  assert.match(e.msg!, /active/);
  assert.is((await collect(conn, first)).exitCode, 0);
  // Still alive and well.
  conn.send({ op: 'ping', id: 'still-there' });
  assert.equal(await conn.next((x) => x.op === 'pong'), { op: 'pong', id: 'still-there' });
  const r = await query(conn, lang === 'python' ? 'print("ok")' : 'echo ok');
  assert.is(r.stdout, 'ok\n');
  assert.is(conn.badLines.length, 0, `unparseable lines from the runner: ${conn.badLines.join(' | ')}`);
}

/**
 * Replay: take three messages of a run that prints a line every 50 ms, don't ack, detach; the
 * rest of the first phase is written while nobody listens. Re-attach, ask for everything after
 * the last message taken: it arrives exactly once, in order, then the second phase.
 */
async function replayQuiet(
  ctx: { container?: Docker.Container; conn?: Conn },
  code: string,
): Promise<void> {
  let conn = ctx.conn!;
  const id = newId();
  conn.autoAck = false;
  conn.send({ op: 'exec', id, mode: 'query', code });
  const taken: Msg[] = [];
  while (taken.length < 3) taken.push(await conn.next((m) => m.id === id && m.op === 'out', 10_000, 'early output'));
  conn.detach();
  const from = conn.lastSeq;
  await new Promise((r) => setTimeout(r, 700)); // lines 4..10 go only to the container log
  conn = ctx.conn = await Conn.attach(ctx.container!, from);
  const seqStart = conn.seenSeqs.length;
  conn.send({ op: 'replay', from });
  const rest = await collect(conn, id, 20_000);
  const seqs = conn.seenSeqs.slice(seqStart);
  assert.equal(seqs, seqs.map((_, i) => from + 1 + i), `seqs after replay are consecutive from ${from + 1}: ${seqs.join(',')}`);
  assert.is(conn.repeats, 0);
  assert.is(conn.gaps, 0);
  const all = taken.map((m) => m.data).join('') + rest.stdout;
  const want = Array.from({ length: 10 }, (_, i) => `line ${i + 1}\n`).join('') + 'phase 2\n';
  assert.is(all, want);
  assert.is(rest.exitCode, 0);
  conn.autoAck = true;
  conn.ack();
}

// ----------------------------------------------------------------------------------------------

const images = suite<{ built?: boolean }>('runner images', { timeoutMs: 300_000 });
images('kernel images are built (idempotent)', async () => {
  try {
    await docker.ping();
  } catch (e) {
    throw new Error(`Docker is not reachable (${(e as Error).message}): the runner tests need a Docker daemon`);
  }
  const res = await buildImages();
  assert.is(res.length, 2);
});
images.run();

// ----------------------------------------------------------------------------------------------

type Ctx = { container?: Docker.Container; conn?: Conn; ready?: Msg };
const py = suite<Ctx>('runner: python', { timeoutMs: 60_000 });

py.before(async (ctx) => {
  Object.assign(ctx, await startKernel('flotilla/python:3.11'));
});
py.after(async (ctx) => {
  ctx.conn?.detach();
  await removeKernel(ctx.container);
});

py('ready names the language and version', ({ ready }) => {
  assert.is(ready!.op, 'ready');
  assert.is(ready!.language, 'python');
  assert.match(String(ready!.version), /^3\.11\./);
  assert.is(ready!.seq, undefined);
});

py('one namespace for the runner\'s life; a last expression is not echoed', async ({ conn }) => {
  const a = await query(conn!, 'x = 41\nimport math\ndef double(v):\n    return 2 * v\nx');
  assert.is(a.exitCode, 0);
  assert.is(a.stdout + a.stderr, '');
  const b = await query(conn!, 'print(x + 1)\nprint(double(math.floor(2.5)), __name__)');
  assert.is(b.stdout, '42\n4 __main__\n');
  assert.is(b.exitCode, 0);
  const seqs = b.msgs.map((m) => m.seq!);
  assert.equal(seqs, seqs.map((_, i) => seqs[0] + i), 'one seq counter, +1 per message');
});

py('stdout and stderr apart, interleaved in order (also fd-level output of subprocesses)', async ({ conn }) => {
  const r = await query(conn!, "print('a'); import sys; print('b', file=sys.stderr); print('c')");
  assert.equal(r.chunks, [['stdout', 'a\n'], ['stderr', 'b\n'], ['stdout', 'c\n']]);
  const s = await query(conn!, "import os, subprocess\nprint('1')\nos.system('echo 2')\nprint('3')\nsubprocess.run(['sh', '-c', 'echo 4; echo e >&2'])\nprint('5', flush=True)\nos.write(2, b'w\\n')\nimport multiprocessing as mp\np = mp.Process(target=print, args=('6',))\np.start(); p.join()\nwith mp.Pool(2) as pool:\n    print(pool.map(abs, [-7, -8]))");
  assert.is(s.stdout, '1\n2\n3\n4\n5\n6\n[7, 8]\n');
  assert.is(s.stderr, 'e\nw\n');
  assert.is(s.exitCode, 0);
});

py('SIGTERM kills a process forked by user code, as in plain Python (a Pool.terminate() of a fresh worker must not hang the run)', async ({ conn }) => {
  // The runner once had a Python-level SIGTERM handler that forked children inherited: one
  // signalled before it ran Python code lost the signal, and `with mp.Pool(2)` could hang.
  const r = await query(conn!, "import os, signal, time\npid = os.fork()\nif pid == 0:\n    time.sleep(30)\n    os._exit(0)\nos.kill(pid, signal.SIGTERM)\nprint(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))", 15_000);
  assert.is(r.stdout, '-15\n');
  assert.is(r.exitCode, 0);
});

py('an exception: traceback on stderr without runner frames, exit 1, namespace survives', async ({ conn }) => {
  const r = await query(conn!, 'kept = "still here"\ndef f():\n    return 1 / 0\nf()');
  assert.is(r.exitCode, 1);
  assert.is(r.stdout, '');
  assert.match(r.stderr, /^Traceback \(most recent call last\):\n/);
  assert.match(r.stderr, /line 3, in f\n    return 1 \/ 0\n/);
  assert.match(r.stderr, /ZeroDivisionError: division by zero\n$/);
  assert.not.match(r.stderr, /runner\.py/);
  const s = await query(conn!, 'x = (');
  assert.is(s.exitCode, 1);
  assert.match(s.stderr, /SyntaxError/);
  assert.not.match(s.stderr, /runner\.py|Traceback/);
  const t = await query(conn!, 'import sys\nprint(kept)\nsys.exit(3)');
  assert.is(t.stdout, 'still here\n');
  assert.is(t.exitCode, 3);
});

py('input(): the prompt on stdout, waiting-input with the prompt, then the line the agent sends', async ({ conn }) => {
  const id = newId();
  conn!.send({ op: 'exec', id, mode: 'query', code: "print('before')\nname = input('Name? ')\nprint('hello', name)\nline = __import__('sys').stdin.readline()\nprint(repr(line))" });
  const answers = ['Bob Ünïcode', 'second'];
  const prompts: string[] = [];
  let stdout = '';
  for (;;) {
    const m = await conn!.next((x) => x.id === id, 10_000, 'run output');
    if (m.op === 'out') stdout += m.data;
    else if (m.op === 'waiting-input') {
      prompts.push(m.prompt!);
      conn!.send({ op: 'input', id, text: answers.shift() });
    } else {
      assert.is(m.op, 'finished');
      assert.is(m.exitCode, 0);
      break;
    }
  }
  assert.equal(prompts, ['Name? ', '']);
  // The prompt is output too, as with Python's own input() (and Backend.AI's kernels).
  assert.is(stdout, "before\nName? hello Bob Ünïcode\n'second\\n'\n");
});

py('output before waiting-input is flushed first', async ({ conn }) => {
  const id = newId();
  conn!.send({ op: 'exec', id, mode: 'query', code: "print('shown first')\ninput('> ')" });
  let before = '';
  for (;;) {
    const m = await conn!.next((x) => x.id === id, 10_000, 'output');
    if (m.op === 'waiting-input') break;
    assert.is(m.op, 'out');
    before += m.data;
  }
  assert.is(before, 'shown first\n> ');
  conn!.send({ op: 'input', id, text: '' });
  assert.is((await collect(conn!, id)).exitCode, 0);
});

async function interruptAfterStart(conn: Conn, code: string): Promise<{ r: RunResult; ms: number }> {
  const id = newId();
  conn.send({ op: 'exec', id, mode: 'query', code });
  await conn.next((m) => m.id === id && m.op === 'out', 10_000, 'started');
  await new Promise((r) => setTimeout(r, 300));
  const t = Date.now();
  conn.send({ op: 'interrupt', id });
  const r = await collect(conn, id, 10_000);
  return { r, ms: Date.now() - t };
}

py('interrupt: a busy loop gets KeyboardInterrupt, the namespace survives', async ({ conn }) => {
  const { r, ms } = await interruptAfterStart(conn!, "n = 0\nprint('started', flush=True)\nwhile True:\n    n += 1");
  assert.is(r.exitCode, 1);
  assert.match(r.stderr, /Traceback \(most recent call last\):[\s\S]*KeyboardInterrupt\n$/);
  assert.not.match(r.stderr, /runner\.py/);
  assert.ok(ms < 2000, `interrupted in ${ms} ms`);
  const after = await query(conn!, 'print(n > 0, kept)');
  assert.is(after.stdout, 'True still here\n');
});

py('interrupt: time.sleep(100) is cut short; also a run that prints in a loop', async ({ conn }) => {
  const a = await interruptAfterStart(conn!, "import time\nslept = 'yes'\nprint('sleeping')\ntime.sleep(100)");
  assert.is(a.r.exitCode, 1);
  assert.match(a.r.stderr, /time\.sleep\(100\)\nKeyboardInterrupt\n$/);
  assert.ok(a.ms < 2000, `interrupted in ${a.ms} ms`);
  const b = await interruptAfterStart(conn!, "i = 0\nwhile True:\n    i += 1\n    print(i)");
  assert.is(b.r.exitCode, 1);
  assert.match(b.r.stderr, /KeyboardInterrupt\n$/);
  const c = await query(conn!, 'print(slept, i > 0)');
  assert.is(c.stdout, 'yes True\n');
});

py('batch: build then exec with exit codes; a failing build skips exec', async ({ conn }) => {
  const ok = await batch(conn!, 'echo building; echo warn >&2', 'echo running; pwd; id -u; cat; echo "stdin rc=$?"; exit 4');
  const bf = ok.msgs.findIndex((m) => m.op === 'build-finished');
  assert.ok(bf > 0, 'build-finished sent');
  assert.is(ok.msgs[bf].exitCode, 0);
  assert.ok(ok.msgs.slice(0, bf).every((m) => m.op === 'out'), 'build output comes before build-finished');
  assert.ok(ok.msgs.slice(0, bf).map((m) => m.data).join('').includes('building'));
  assert.is(ok.stdout, 'building\nrunning\n/home/work\n1000\nstdin rc=0\n');
  assert.is(ok.stderr, 'warn\n');
  assert.is(ok.exitCode, 4);

  const failed = await batch(conn!, 'echo compiling; exit 3', 'echo never');
  assert.is(failed.exitCode, 3);
  assert.is(failed.stdout, 'compiling\n');
  assert.not.ok(failed.msgs.some((m) => m.op === 'build-finished'));

  for (const build of [null, '']) {
    const nob = await batch(conn!, build, 'echo only exec');
    assert.is(nob.stdout, 'only exec\n');
    assert.not.ok(nob.msgs.some((m) => m.op === 'build-finished'));
    assert.is(nob.exitCode, 0);
  }
});

py('batch: interrupt sends SIGINT to the process group (exit 130)', async ({ conn }) => {
  const id = newId();
  conn!.send({ op: 'exec', id, mode: 'batch', build: null, exec: 'echo started; sleep 100' });
  await conn!.next((m) => m.id === id && m.op === 'out', 10_000, 'started');
  const t = Date.now();
  conn!.send({ op: 'interrupt', id });
  const r = await collect(conn!, id);
  assert.is(r.exitCode, 130);
  assert.ok(Date.now() - t < 1500);
});

py('10 MB from one run arrive complete and in order (acks as we go)', async ({ conn }) => {
  const want = expectedLines(100_000);
  const got = await hashedRun(conn!, (id) => conn!.send({ op: 'exec', id, mode: 'query', code: "for i in range(1, 100001):\n    print(f'{i:08d} ' + 'x' * 90)" }), 60_000);
  assert.is(got.exitCode, 0);
  assert.is(got.stderr, '');
  assert.is(got.length, want.length);
  assert.is(got.sha256, want.sha256);
  assert.ok(got.outMessages < 2000, `coalesced into ${got.outMessages} messages`);
  assert.is(conn!.gaps + conn!.repeats, 0);
});

py('replay after re-attach: the rest exactly once', async (ctx) => {
  await replayQuiet(ctx, "import time\nfor i in range(1, 11):\n    print('line', i, flush=True)\n    time.sleep(0.05)\ntime.sleep(2)\nprint('phase 2')");
});

py('replay while output keeps flowing: nothing lost, repeats are dropped by seq', async (ctx) => {
  let conn = ctx.conn!;
  const id = newId();
  conn.autoAck = false;
  const n = 3000;
  conn.send({ op: 'exec', id, mode: 'query', code: `import time\nfor i in range(${n}):\n    print(i)\n    time.sleep(0.0005)` });
  let text = '';
  for (let k = 0; k < 5; k++) text += (await conn.next((m) => m.id === id && m.op === 'out', 10_000, 'output')).data;
  conn.detach();
  const from = conn.lastSeq;
  await new Promise((r) => setTimeout(r, 200));
  conn = ctx.conn = await Conn.attach(ctx.container!, from);
  conn.send({ op: 'replay', from });
  const rest = await collect(conn, id, 30_000);
  text += rest.stdout;
  assert.is(text, Array.from({ length: n }, (_, i) => `${i}\n`).join(''));
  assert.is(rest.exitCode, 0);
});

py('back-pressure: unacknowledged output stops at the replay limit, nothing is dropped', async ({ conn }) => {
  conn!.autoAck = false;
  let received = 0;
  const h = createHash('sha256');
  const id = newId();
  conn!.sink = (m) => { if (m.id === id) { received += m.data!.length; h.update(m.data!); } };
  try {
    conn!.send({ op: 'exec', id, mode: 'query', code: "line = 'y' * 1023\nfor i in range(100 * 1024):\n    print(line)" });
    // Wait for the flow to stop.
    let last = -1;
    while (received !== last) {
      last = received;
      await new Promise((r) => setTimeout(r, 700));
    }
    assert.ok(received > 32 * MiB && received <= 64 * MiB, `stopped after ${(received / MiB).toFixed(1)} MiB unacknowledged`);
    assert.is(conn!.drain().filter((m) => m.op === 'finished').length, 0, 'not finished while blocked');
    conn!.autoAck = true;
    conn!.ack();
    await conn!.next((m) => m.op === 'finished' && m.id === id, 60_000, 'finished');
    assert.is(received, 100 * MiB);
    const want = createHash('sha256');
    const block = `${'y'.repeat(1023)}\n`.repeat(1024);
    for (let i = 0; i < 100; i++) want.update(block);
    assert.is(h.digest('hex'), want.digest('hex'));
  } finally {
    conn!.sink = null;
    conn!.autoAck = true;
  }
});

py('throughput: 100 MB printed in a loop of small prints', async ({ conn }) => {
  const got = await hashedRun(conn!, (id) => conn!.send({ op: 'exec', id, mode: 'query', code: "line = 'x' * 99\nfor i in range(1_000_000):\n    print(line)" }), 120_000);
  assert.is(got.exitCode, 0);
  assert.is(got.length, 100_000_000);
  const want = createHash('sha256');
  const block = `${'x'.repeat(99)}\n`.repeat(10_000);
  for (let i = 0; i < 100; i++) want.update(block);
  assert.is(got.sha256, want.digest('hex'));
  console.log(`    python: 100 MB in 1,000,000 prints: ${got.seconds.toFixed(2)} s, ${(100 / got.seconds).toFixed(1)} MB/s, ${got.outMessages} out messages`);
});

py('malformed requests never kill the runner', async ({ conn }) => {
  await malformed(conn!, 'python');
});

py.run();

// ----------------------------------------------------------------------------------------------

const sh = suite<Ctx>('runner: shell', { timeoutMs: 60_000 });

sh.before(async (ctx) => {
  Object.assign(ctx, await startKernel('flotilla/shell:1.35'));
});
sh.after(async (ctx) => {
  ctx.conn?.detach();
  await removeKernel(ctx.container);
});

sh('ready names the language and version', ({ ready }) => {
  assert.is(ready!.language, 'shell');
  assert.match(String(ready!.version), /^1\.35/);
});

sh('query: sh -c code in /home/work as work, stdout/stderr apart, exit code', async ({ conn }) => {
  const r = await query(conn!, 'echo "hello \\"q\\" \\\\ é 한글"; echo oops >&2; pwd; id -u; printf "tab\\tcr\\rbell\\007nul\\000end"; exit 5');
  assert.is(r.stdout, 'hello "q" \\ é 한글\n/home/work\n1000\ntab\tcr\rbell\u0007nul\u0000end');
  assert.is(r.stderr, 'oops\n');
  assert.is(r.exitCode, 5);
  const multi = await query(conn!, 'for i in 1 2 3; do\n  echo "n=$i"\ndone\ncat; echo "stdin rc=$?"');
  assert.is(multi.stdout, 'n=1\nn=2\nn=3\nstdin rc=0\n');
});

sh('batch: build then exec with exit codes; a failing build skips exec', async ({ conn }) => {
  const ok = await batch(conn!, 'echo building', 'echo running; exit 4');
  assert.equal(ok.msgs.map((m) => m.op), ['out', 'build-finished', 'out', 'finished']);
  assert.is(ok.stdout, 'building\nrunning\n');
  assert.is(ok.exitCode, 4);
  const failed = await batch(conn!, 'echo compiling; exit 3', 'echo never');
  assert.is(failed.exitCode, 3);
  assert.is(failed.stdout, 'compiling\n');
  assert.not.ok(failed.msgs.some((m) => m.op === 'build-finished'));
  const nob = await batch(conn!, null, 'echo only');
  assert.equal(nob.msgs.map((m) => m.op), ['out', 'finished']);
});

sh('interrupt: sleep and a busy loop end with 130', async ({ conn }) => {
  for (const code of ['echo started; sleep 100', 'echo started; while :; do :; done']) {
    const id = newId();
    conn!.send({ op: 'exec', id, mode: 'query', code });
    await conn!.next((m) => m.id === id && m.op === 'out', 10_000, 'started');
    const t = Date.now();
    conn!.send({ op: 'interrupt', id });
    const r = await collect(conn!, id);
    assert.is(r.exitCode, 130, code);
    assert.ok(Date.now() - t < 1500, `${code}: interrupted in ${Date.now() - t} ms`);
  }
  const trapped = newId();
  conn!.send({ op: 'exec', id: trapped, mode: 'batch', build: null, exec: "trap 'echo ignored' INT; echo started; while :; do sleep 0.1; done" });
  await conn!.next((m) => m.id === trapped && m.op === 'out', 10_000, 'started');
  conn!.send({ op: 'interrupt', id: trapped });
  const r = await collect(conn!, trapped);
  assert.is(r.exitCode, 137, 'SIGKILL 2 s after an ignored SIGINT');
  assert.is((await query(conn!, 'echo alive')).stdout, 'alive\n');
});

sh('10 MB from one run arrive complete and in order (acks as we go)', async ({ conn }) => {
  const want = expectedLines(100_000);
  const code = "seq 1 100000 | awk -v x=$(printf '%090d' 0 | tr 0 x) '{ printf \"%08d %s\\n\", $1, x }'";
  const got = await hashedRun(conn!, (id) => conn!.send({ op: 'exec', id, mode: 'query', code }), 60_000);
  assert.is(got.stderr, '');
  assert.is(got.exitCode, 0);
  assert.is(got.length, want.length);
  assert.is(got.sha256, want.sha256);
  assert.is(conn!.gaps + conn!.repeats, 0);
  console.log(`    shell: 10 MB in ${got.seconds.toFixed(2)} s (${(10 / got.seconds).toFixed(1)} MB/s, ${got.outMessages} out messages)`);
});

sh('replay after re-attach: the rest exactly once', async (ctx) => {
  await replayQuiet(ctx, 'i=1; while [ $i -le 10 ]; do echo "line $i"; sleep 0.05; i=$((i+1)); done; sleep 2; echo "phase 2"');
});

sh('malformed requests never kill the runner', async ({ conn }) => {
  await malformed(conn!, 'shell');
});

sh.run();
