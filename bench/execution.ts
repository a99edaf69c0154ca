// Code execution through the whole stack, against raw Docker in the same run and container:
//  1. round trip of `print(1)` in query mode (SDK → HTTP → manager → agent → runner → back),
//     p50/p99 over ≥ 200 calls, against dockerode `exec` of `python3 -c 'print(1)'`;
//  2. streaming throughput of one run printing 100 MB, against a raw dockerode exec attach
//     reading the same bytes from the same container.
// Streaming is measured through both client paths: HTTP `continue` polls (the SDK's run) and
// the WebSocket `GET /stream/session/{name}/execute` (what Backend.AI's `run` uses), in ROUNDS
// rounds of (HTTP, WebSocket, raw attach), medians reported.
// Run: node --import tsx bench/execution.ts [--calls 200] [--mb 100] [--rounds 3]
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import Docker from 'dockerode';
import { WebSocket } from 'ws';
import { API_VERSION, signRequest } from '../schema/signing.ts';
import { loadProcessSettings } from '../config/settings.ts';
import { startAgent } from '../runtime/agent/index.ts';
import { createLogger } from '../runtime/log.ts';
import { startManager } from '../runtime/manager/index.ts';
import { Client } from '../runtime/sdk/index.ts';
import { openStores } from '../runtime/stores/index.ts';
import { fmt, freshBenchDatabase, intArg, log, progress, summarize, writeResultsSection } from './lib.ts';

const BENCH = 'execution';
const CALLS = intArg('calls', 200);
const MB = intArg('mb', 100);
const ROUNDS = intArg('rounds', 3);
const docker = new Docker();

async function dockerExec(container: Docker.Container, cmd: string[]): Promise<{ bytes: number; ms: number }> {
  const t0 = performance.now();
  const exec = await container.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({ hijack: true, stdin: false });
  const out = new PassThrough();
  let bytes = 0;
  out.on('data', (b: Buffer) => { bytes += b.length; });
  docker.modem.demuxStream(stream, out, new PassThrough().resume());
  await new Promise<void>((resolve, reject) => { stream.on('end', resolve); stream.on('error', reject); });
  const { ExitCode } = await exec.inspect();
  if (ExitCode !== 0) throw new Error(`${cmd.join(' ')} exited ${ExitCode}`);
  return { bytes, ms: performance.now() - t0 };
}

const tag = randomBytes(4).toString('hex');
const agentId = `i-bench-exec-${tag}`;
const ak = `AK${randomBytes(9).toString('hex').toUpperCase()}`;
const sk = randomBytes(20).toString('base64');
const b = await freshBenchDatabase();
const settings = loadProcessSettings({
  ...process.env, FLOTILLA_DATABASE_URL: b.url, FLOTILLA_ETCD_NAMESPACE: `bench/execution-${tag}/`, FLOTILLA_MANAGER_PORT: '0',
  FLOTILLA_ADMIN_ACCESS_KEY: ak, FLOTILLA_ADMIN_SECRET_KEY: sk,
});
const logger = createLogger('bench', 'error');
const stores = await openStores(settings);
const m = await startManager({ settings, stores, log: logger });
const agent = await startAgent({ agentId, managerUrls: [m.url], token: m.agentToken, resourceGroup: 'default', slots: 'cpu=2,mem=4g', log: logger });
await agent.registered;
const client = new Client({ endpoint: m.url, accessKey: ak, secretKey: sk });
try {
  const s = await client.sessions.create({ name: `bench-exec-${tag}`, image: 'python', resources: { cpu: 2, mem: '1g' } });
  if (s.status !== 'RUNNING') throw new Error(`session is ${s.status}`);
  const info = await client.sessions.get(s.sessionId);
  const container = docker.getContainer(info.kernels[0].containerId!);

  // Warm both paths.
  for (let i = 0; i < 5; i++) { await client.sessions.run(s.sessionId, 'print(1)'); await dockerExec(container, ['python3', '-c', 'print(1)']); }

  // 1. Round trips, alternating in blocks so drift hits both alike.
  const ours: number[] = [];
  const theirs: number[] = [];
  const p1 = progress(BENCH, 'print(1) round trips', CALLS);
  // Blocks of BLOCK calls, alternating: drift still hits both alike, while a docker exec's
  // process teardown (which goes on after its answer) does not land inside the next flotilla call.
  const BLOCK = 20;
  for (let i = 0; i < CALLS; i += BLOCK) {
    const n = Math.min(BLOCK, CALLS - i);
    for (let j = 0; j < n; j++) {
      const t0 = performance.now();
      const r = await client.sessions.execute(s.sessionId, { mode: 'query', code: 'print(1)' });
      ours.push(performance.now() - t0);
      if (r.status !== 'finished' || r.console.map(([, d]) => d).join('') !== '1\n') throw new Error(`unexpected reply ${JSON.stringify(r)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
    for (let j = 0; j < n; j++) theirs.push((await dockerExec(container, ['python3', '-c', 'print(1)'])).ms);
    await new Promise((r) => setTimeout(r, 200));
    p1.tick(n);
  }
  p1.done();
  const a = summarize(ours);
  const e = summarize(theirs);

  // 2. Streaming MB megabytes in realistic small prints of 100-byte lines.
  const lines = Math.round((MB * 1e6) / 100);
  const code = `import sys\nw = sys.stdout.write\nline = "x" * 99 + "\\n"\nfor i in range(${lines}):\n    w(line)`;
  const viaHttp = async (): Promise<number> => {
    const t0 = performance.now();
    let got = 0;
    const r = await client.sessions.run(s.sessionId, code, { onOutput: (_s, d) => { got += d.length; } });
    const ms = performance.now() - t0;
    if (r.exitCode !== 0 || got !== lines * 100) throw new Error(`HTTP stream incomplete: ${got} of ${lines * 100} bytes, exit ${r.exitCode}`);
    return got / 1e6 / (ms / 1000);
  };
  const viaWebSocket = async (): Promise<number> => {
    const url = new URL(`/stream/session/${s.sessionId}/execute`, m.url);
    const date = new Date().toISOString();
    const { authorization } = signRequest({ method: 'GET', pathWithQuery: url.pathname, date, host: url.host, version: API_VERSION, accessKey: ak, secretKey: sk });
    const t0 = performance.now();
    const ws = new WebSocket(url.toString().replace('http', 'ws'), { headers: { Date: date, 'X-BackendAI-Version': API_VERSION, Authorization: authorization } });
    let got = 0;
    let last: { status?: string; exitCode?: number | null } = {};
    await new Promise<void>((resolve, reject) => {
      ws.on('open', () => ws.send(JSON.stringify({ mode: 'query', code })));
      ws.on('message', (d) => {
        const f = JSON.parse(d.toString()) as { status: string; exitCode: number | null; console: Array<[string, string]> };
        for (const [, data] of f.console) got += data.length;
        last = f;
      });
      ws.on('close', () => resolve());
      ws.on('error', reject);
    });
    const ms = performance.now() - t0;
    if (last.status !== 'finished' || last.exitCode !== 0 || got !== lines * 100) throw new Error(`WebSocket stream incomplete: ${got} of ${lines * 100} bytes, ${JSON.stringify(last).slice(0, 200)}`);
    return got / 1e6 / (ms / 1000);
  };
  const viaRaw = async (): Promise<number> => {
    const raw = await dockerExec(container, ['python3', '-c', code]);
    if (raw.bytes !== lines * 100) throw new Error(`raw stream incomplete: ${raw.bytes}`);
    return raw.bytes / 1e6 / (raw.ms / 1000);
  };
  const httpMBs: number[] = [];
  const wsMBs: number[] = [];
  const rawMBs: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    log(BENCH, `streaming ${MB} MB, round ${i + 1} of ${ROUNDS}: HTTP continue polls, WebSocket, raw attach…`);
    httpMBs.push(await viaHttp());
    wsMBs.push(await viaWebSocket());
    rawMBs.push(await viaRaw());
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  const each = (xs: number[]) => xs.map((x) => fmt(x, 0)).join(', ');
  const [h, w, raw] = [median(httpMBs), median(wsMBs), median(rawMBs)];

  const rows: Array<[string, string]> = [
    ['print(1) round trip p50 / p99, flotilla (SDK → HTTP → manager → agent → runner)', `${fmt(a.p50, 2)} ms / ${fmt(a.p99, 2)} ms (n ${a.n})`],
    ['print(1) p50 / p99, dockerode exec of python3 -c in the same container', `${fmt(e.p50, 2)} ms / ${fmt(e.p99, 2)} ms (n ${e.n})`],
    ['speed-up at p50 (target ≥ 10×)', `${fmt(e.p50 / a.p50, 1)}×`],
    [`streaming ${MB} MB in 100-byte prints, flotilla, HTTP continue polls (SDK run): median MB/s (rounds)`, `${fmt(h, 1)} MB/s (${each(httpMBs)})`],
    [`the same through the WebSocket execute stream (Backend.AI's run)`, `${fmt(w, 1)} MB/s (${each(wsMBs)})`],
    [`the same ${MB} MB through a raw dockerode exec attach`, `${fmt(raw, 1)} MB/s (${each(rawMBs)})`],
    ['throughput ratio, HTTP polls / raw (target ≥ 0.5×)', `${fmt(h / raw, 2)}×`],
    ['throughput ratio, WebSocket / raw (target ≥ 0.5×)', `${fmt(w / raw, 2)}×`],
  ];
  for (const [k, v] of rows) console.log(`${k.padEnd(80)} ${v}`);
  writeResultsSection({
    title: 'Code execution (issue 4)',
    table: { headers: ['figure', 'value'], rows },
    ratio: `print(1) p50: dockerode exec / flotilla = **${fmt(e.p50 / a.p50, 1)}×** faster; ${MB} MB stream: flotilla / raw attach = **${fmt(h / raw, 2)}×** over HTTP polls, **${fmt(w / raw, 2)}×** over the WebSocket`,
    notes: [
      'One process: in-process manager and agent on the real PostgreSQL, Redis and etcd; one python session (cpu 2, mem 1g). Round trips alternate in blocks of 20 (20 flotilla calls, a 200 ms pause, 20 docker execs, a pause) so drift hits both alike while a docker exec\'s process teardown, which goes on after its answer, does not land inside the next flotilla call (one call right after the other, flotilla\'s p50 was 5.8 ms against 4.4 ms in blocks on the same machine); 5 warm-up pairs not counted.',
      'A flotilla round trip is one `POST /session/{name}` (query mode); the agent answers as soon as the run finishes. The exec baseline pays process start-up of a fresh interpreter, which is what a query in a persistent interpreter avoids: that is the point of the runner.',
      `Streaming: the same Python code writes the bytes in both; ${ROUNDS} rounds of (HTTP, WebSocket, raw), the median of each reported with every round in brackets. Flotilla relays them runner → agent (acknowledged JSON lines over the container attach) → manager (socket.io RPC replies of up to 4 MiB) → client: either \`continue\` polls (\`client.sessions.run\`, one HTTP reply per poll) or the WebSocket execute stream (the manager polls the agent every 100 ms and sends each reply as a frame). The baseline reads the exec's hijacked, multiplexed stream directly.`,
      'print(1): met (≥ 10×). Streaming: NOT met (issue 4 stays open). The runner is no longer the limit: with sys.stdout a C-level buffered stream on the capture pipe and output escaped by C-level byte passes, the runner read straight from its attach delivers 88–105 MB/s for 100-byte prints (its own integration test; 62–67 MB/s before), and an ordered print(1) costs the runner about 0.5 ms (1 ms before). The limit is Node CPU: bench, manager, agent and SDK share one thread here, and a CPU profile of this bench (600 MB streamed) puts about 3.5 s of Node CPU on every 100 MB, saturating that thread at ~30 MB/s. Per 100 MB: masking and unmasking of the agent → manager socket.io WebSocket frames in JavaScript (ws without bufferutil) 0.65 s; the manager\'s fan-out of every output chunk to other managers (watch serverSideEmit over Redis, even with no remote watcher) 0.37 s; socket.io\'s JSON encode and parse of the replies 0.36 s; garbage collection 0.26 s; the agent\'s decode and JSON.parse of runner lines 0.22 s; the manager → client leg (fastify serialisation and SDK JSON.parse, or the WebSocket frame stringify) about 0.3 s. None of the large items is in the runner, the agent\'s runner bridge or the execute stream; they need changes to the agent\'s socket.io client (bufferutil, or output as binary attachments instead of JSON strings) and to the output fan-out (only when a remote watcher asked for output).',
      'With bufferutil made visible to ws (NODE_PATH to a scratch install, no change to the repository; one run, --calls 20) the same bench streamed 32.2 MB/s over HTTP polls and 36.9 MB/s over the WebSocket against 271.8 MB/s raw (0.12× and 0.14×): masking was one cost among several, and 0.5× needs the output relayed without its JSON passes (about 0.75 s of Node CPU per 100 MB at most on this machine, against about 2.5–3.5 s now). The machine ran other test suites meanwhile (load average 3–5), which is why the raw baseline spreads from 95 to 290 MB/s between rounds.',
    ],
  });
} finally {
  for (const id of m.supervisor.liveSessionIds()) m.supervisor.send(id, { type: 'TERMINATE', reason: 'bench-cleanup', forced: true });
  const until = Date.now() + 15_000;
  while (m.supervisor.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  await agent.close();
  await m.close();
  for (const k of Object.keys(await stores.config.getPrefix(''))) await stores.config.delete(k);
  await stores.close();
  for (const c of await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`ai.flotilla.agent-id=${agentId}`] }) })) {
    await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
  }
  await b.drop();
}
