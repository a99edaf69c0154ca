// Running code in sessions the way Backend.AI's clients do, through the whole stack (HTTP →
// manager → agent → runner in a real container and back), on real processes.
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import Docker from 'dockerode';
import WebSocket from 'ws';
import { Conflict, InvalidAPIParameters } from '../../schema/errors.ts';
import { API_VERSION, signRequest } from '../../schema/signing.ts';
import { Client, type ExecuteResult } from '../../runtime/sdk/index.ts';
import { startCluster, type TestCluster } from '../helpers/processes.ts';
import { eventually, suite } from '../helpers/suite.ts';

const docker = new Docker();
const t = suite<{ c: TestCluster; agentId: string; s: string }>('code execution (real processes)', { timeoutMs: 120_000 });

t.before(async (ctx) => {
  ctx.c = await startCluster({ config: { 'heartbeat.interval': 300, 'heartbeat.timeout': 3000, 'session.stop_grace': 1 } });
  ctx.agentId = `i-exec-${Math.random().toString(36).slice(2, 8)}`;
  await ctx.c.startAgent(ctx.agentId, 'cpu=4,mem=4g');
  const s = await ctx.c.client.sessions.create({ name: 'exec-main', image: 'python', resources: { cpu: 1, mem: '1g' } });
  assert.is(s.status, 'RUNNING');
  ctx.s = s.sessionId;
});
t.after(async (ctx) => {
  await ctx.c?.stop();
  const left = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`ai.flotilla.agent-id=${ctx.agentId}`] }) });
  for (const c of left) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
});

/** Run to the end, collecting every console item and every reply's status. */
async function runAll(c: TestCluster, session: string, code: string, opts: Parameters<TestCluster['client']['sessions']['run']>[2] = {}) {
  const out: Array<[string, string]> = [];
  const r = await c.client.sessions.run(session, code, { ...opts, onOutput: (s, d) => out.push([s, d]) });
  const text = (stream: string) => out.filter(([s]) => s === stream).map(([, d]) => d).join('');
  return { r, out, stdout: text('stdout'), stderr: text('stderr') };
}

t('variables survive between queries: x = 41, then print(x + 1) prints 42', async ({ c, s }) => {
  const first = await runAll(c, s, 'x = 41');
  assert.is(first.r.status, 'finished');
  assert.is(first.r.exitCode, 0);
  const second = await runAll(c, s, 'print(x + 1)');
  assert.is(second.stdout, '42\n');
  assert.is(second.r.exitCode, 0);
  assert.ok(typeof second.r.runId === 'string' && second.r.runId.length > 0);
  // Counted without holding up the reply: it shows shortly after.
  await eventually(async () => (await c.client.sessions.get(s)).numQueriesExecuted >= 2, 5000, 'both queries counted');
});

t('stdout and stderr arrive apart and in order', async ({ c, s }) => {
  const { out } = await runAll(c, s, "import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')");
  assert.equal(out.filter(([, d]) => d), [['stdout', 'a\n'], ['stderr', 'b\n'], ['stdout', 'c\n']]);
});

t('an exception gives the traceback on stderr and exit code 1; the namespace lives on', async ({ c, s }) => {
  const { r, stderr } = await runAll(c, s, 'def f():\n    raise ValueError("boom")\nf()');
  assert.is(r.exitCode, 1);
  assert.match(stderr, /Traceback \(most recent call last\)/);
  assert.match(stderr, /ValueError: boom/);
  assert.is((await runAll(c, s, 'print(x)')).stdout, '41\n');
});

t('input() round-trips: the prompt shown as stdout, waiting-input, then the line answers it', async ({ c, s }) => {
  const first = await c.client.sessions.execute(s, { mode: 'query', code: 'name = input("who? ")\nprint("hello", name)' });
  let r: ExecuteResult = first;
  let shown = first.console.map(([, d]) => d).join('');
  while (r.status === 'continued') {
    r = await c.client.sessions.execute(s, { mode: 'continue', runId: first.runId });
    shown += r.console.map(([, d]) => d).join('');
  }
  assert.is(r.status, 'waiting-input');
  assert.is(shown, 'who? ', 'the prompt is output, as Backend.AI\'s kernels show it');
  let answer = await c.client.sessions.execute(s, { mode: 'input', code: 'flotilla', runId: first.runId });
  while (answer.status === 'continued') answer = await c.client.sessions.execute(s, { mode: 'continue', runId: first.runId });
  assert.is(answer.status, 'finished');
  assert.match(answer.console.map(([, d]) => d).join(''), /hello flotilla/);
});

t('while True: pass is interrupted and the next query still sees earlier variables', async ({ c, s }) => {
  const started = await c.client.sessions.execute(s, { mode: 'query', code: 'while True:\n    pass' });
  assert.is(started.status, 'continued');
  await c.client.sessions.interrupt(s);
  let r = started;
  while (r.status === 'continued') r = await c.client.sessions.execute(s, { mode: 'continue', runId: started.runId });
  assert.is(r.status, 'finished');
  assert.is(r.exitCode, 1);
  assert.match(r.console.map(([, d]) => d).join(''), /KeyboardInterrupt/);
  assert.is((await runAll(c, s, 'print(x)')).stdout, '41\n');
});

t('a run past its timeout ends exec-timeout', async ({ c, s }) => {
  const { r } = await runAll(c, s, 'import time\ntime.sleep(60)', { options: { exec_timeout: 1 } });
  assert.is(r.status, 'exec-timeout');
  assert.is((await runAll(c, s, 'print(x)')).stdout, '41\n');
});

t('batch mode runs the build then the exec command in /home/work', async ({ c, s }) => {
  const ok = await runAll(c, s, '', { mode: 'batch', options: { build: 'echo built > artefact.txt', exec: 'cat artefact.txt; pwd; exit 3' } });
  assert.is(ok.stdout, 'built\n/home/work\n');
  assert.is(ok.r.exitCode, 3);
  const failedBuild = await runAll(c, s, '', { mode: 'batch', options: { build: 'exit 7', exec: 'echo never' } });
  assert.is(failedBuild.r.exitCode, 7);
  assert.not.match(failedBuild.stdout, /never/);
});

t('10 MB of output from one run arrives complete and in order across continue polls', async ({ c, s }) => {
  const code = 'import sys\nfor i in range(100000):\n    sys.stdout.write("%09d" % i + "-" * 90 + "\\n")';
  const expected = Array.from({ length: 100_000 }, (_, i) => `${String(i).padStart(9, '0')}${'-'.repeat(90)}\n`).join('');
  const { stdout, r } = await runAll(c, s, code);
  assert.is(r.exitCode, 0);
  assert.is(stdout.length, expected.length);
  assert.is(createHash('sha256').update(stdout).digest('hex'), createHash('sha256').update(expected).digest('hex'));
});

t('the same 10 MB arrive over the WebSocket execute stream', async ({ c, s }) => {
  const url = new URL(`/stream/session/${s}/execute`, c.manager.url);
  const date = new Date().toISOString();
  const { authorization } = signRequest({ method: 'GET', pathWithQuery: url.pathname, date, host: url.host, version: API_VERSION, accessKey: c.accessKey, secretKey: c.secretKey });
  const ws = new WebSocket(url.toString().replace('http', 'ws'), { headers: { Date: date, 'X-BackendAI-Version': API_VERSION, Authorization: authorization } });
  const frames: ExecuteResult[] = [];
  await new Promise<void>((resolve, reject) => {
    // A pause half way: the first half must reach the client before the run ends (streamed, not one answer).
    ws.on('open', () => ws.send(JSON.stringify({ mode: 'query', code: 'import time\nfor i in range(100000):\n    print("%09d" % i + "-" * 90)\n    if i == 50000: time.sleep(1)' })));
    ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
    ws.on('close', () => resolve());
    ws.on('error', reject);
  });
  const last = frames[frames.length - 1];
  assert.is(last.status, 'finished');
  const withOutput = frames.filter((f) => f.console.length);
  assert.ok(withOutput.length >= 2, `streamed in ${withOutput.length} frames with output`);
  assert.ok(withOutput[0].status === 'continued', 'the first output came while the run went on');
  const stdout = frames.flatMap((f) => f.console).filter(([st]) => st === 'stdout').map(([, d]) => d).join('');
  const expected = Array.from({ length: 100_000 }, (_, i) => `${String(i).padStart(9, '0')}${'-'.repeat(90)}\n`).join('');
  assert.is(createHash('sha256').update(stdout).digest('hex'), createHash('sha256').update(expected).digest('hex'));
});

t('an unsigned WebSocket is refused', async ({ c, s }) => {
  const ws = new WebSocket(new URL(`/stream/session/${s}/execute`, c.manager.url).toString().replace('http', 'ws'));
  const code = await new Promise<number>((resolve) => { ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)); ws.on('error', () => undefined); });
  assert.is(code, 401);
});

t('a bad first WebSocket frame gets its problem frame and close code 1008 (the client\'s fault), not 1011', async ({ c, s }) => {
  const url = new URL(`/stream/session/${s}/execute`, c.manager.url);
  const date = new Date().toISOString();
  const { authorization } = signRequest({ method: 'GET', pathWithQuery: url.pathname, date, host: url.host, version: API_VERSION, accessKey: c.accessKey, secretKey: c.secretKey });
  const ws = new WebSocket(url.toString().replace('http', 'ws'), { headers: { Date: date, 'X-BackendAI-Version': API_VERSION, Authorization: authorization } });
  const frames: Array<{ type?: string }> = [];
  const code = await new Promise<number>((resolve, reject) => {
    ws.on('open', () => ws.send('not json'));
    ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
    ws.on('close', (closeCode) => resolve(closeCode));
    ws.on('error', reject);
  });
  assert.is(code, 1008);
  assert.equal(frames.map((f) => f.type), ['https://api.backend.ai/probs/invalid-api-params']);
  assert.is((await c.client.sessions.execute(s, { mode: 'query', code: 'print(6 * 7)' })).console.map(([, d]) => d).join(''), '42\n');
});

t('an answer whose client gave up waiting is not lost: its output comes first with the next continue', async ({ c, s }) => {
  const code = 'import time\nfor i in range(40):\n    print(i, flush=True)\n    time.sleep(0.1)';
  const first = await c.client.sessions.execute(s, { mode: 'query', code });
  let out = first.console.map(([, d]) => d).join('');
  // The agent answers a continue within ~1.5 s; this client leaves after 300 ms, so that answer reaches nobody.
  const impatient = new Client({ endpoint: c.manager.url, accessKey: c.accessKey, secretKey: c.secretKey, timeoutMs: 300 });
  let gaveUp = false;
  await impatient.sessions.execute(s, { mode: 'continue', runId: first.runId }).catch(() => { gaveUp = true; });
  assert.ok(gaveUp, 'the impatient poll timed out');
  await new Promise((r) => setTimeout(r, 2000));
  let r = first;
  do {
    r = await c.client.sessions.execute(s, { mode: 'continue', runId: first.runId });
    out += r.console.map(([, d]) => d).join('');
  } while (r.status === 'continued');
  assert.is(r.status, 'finished');
  assert.equal(out.split('\n').filter(Boolean).map(Number), Array.from({ length: 40 }, (_, i) => i), 'every line once, in order');
});

t('bad input: unknown mode, continue without runId, a session that is not RUNNING are 4xx, the kernel unharmed', async ({ c, s }) => {
  try { await c.client.sessions.execute(s, { mode: 'shout' as 'query', code: 'x' }); assert.unreachable(); } catch (e) { assert.instance(e, InvalidAPIParameters); }
  try { await c.client.sessions.execute(s, { mode: 'continue' }); assert.unreachable(); } catch (e) { assert.instance(e, InvalidAPIParameters); }
  try { await c.client.sessions.execute(s, { mode: 'continue', runId: 'no-such-run' }); assert.unreachable(); } catch (e) { assert.instance(e, InvalidAPIParameters); }
  const pending = await c.client.sessions.create({ name: 'exec-pending', image: 'python', resources: { cpu: 64 }, enqueueOnly: true }).catch((e) => e);
  assert.ok(pending instanceof Error, 'over capacity is refused at creation');
  const other = await c.client.sessions.create({ name: 'exec-ended', image: 'python' });
  await c.client.sessions.destroy(other.sessionId);
  try { await c.client.sessions.execute(other.sessionId, { mode: 'query', code: 'print(1)' }); assert.unreachable(); } catch (e) { assert.instance(e, Conflict); }
  assert.is((await runAll(c, s, 'print(x)')).stdout, '41\n');
});

t('an agent restarted (kill -9) while a run prints: after re-attach every line arrives exactly once', async ({ c, s, agentId }) => {
  const started = await c.client.sessions.execute(s, { mode: 'query', code: 'import time\nfor i in range(60):\n    print("line", i, flush=True)\n    time.sleep(0.05)' });
  const lines: string[] = started.console.map(([, d]) => d);
  const agent = c.agents.get(agentId)!;
  agent.child.kill('SIGKILL');
  await agent.exited;
  await new Promise((r) => setTimeout(r, 1000)); // the runner keeps printing meanwhile
  await c.startAgent(agentId, 'cpu=4,mem=4g');
  let r = started;
  await eventually(async () => {
    try { r = await c.client.sessions.execute(s, { mode: 'continue', runId: started.runId }); return true; } catch { return false; }
  }, 20_000, 'continue answered after the agent came back');
  lines.push(...r.console.map(([, d]) => d));
  while (r.status === 'continued') {
    r = await c.client.sessions.execute(s, { mode: 'continue', runId: started.runId });
    lines.push(...r.console.map(([, d]) => d));
  }
  assert.is(r.status, 'finished');
  const got = lines.join('').split('\n').filter(Boolean);
  assert.equal(got, Array.from({ length: 60 }, (_, i) => `line ${i}`));
  assert.is((await runAll(c, s, 'print(x)')).stdout, '41\n');
});

t.run();
