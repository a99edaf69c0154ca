// Code execution through the whole stack, against raw Docker in the same run and container:
//  1. round trip of `print(1)` in query mode (SDK → HTTP → manager → agent → runner → back),
//     p50/p99 over ≥ 200 calls, against dockerode `exec` of `python3 -c 'print(1)'`;
//  2. streaming throughput of one run printing 100 MB, against a raw dockerode exec attach
//     reading the same bytes from the same container.
// Run: node --import tsx bench/execution.ts [--calls 200] [--mb 100]
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import Docker from 'dockerode';
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

  // 2. Streaming 100 MB: 1 MiB lines... no: realistic small prints of 100-byte lines.
  const lines = Math.round((MB * 1e6) / 100);
  const code = `import sys\nw = sys.stdout.write\nline = "x" * 99 + "\\n"\nfor i in range(${lines}):\n    w(line)`;
  log(BENCH, `streaming ${MB} MB through flotilla…`);
  const t0 = performance.now();
  let got = 0;
  const r = await client.sessions.run(s.sessionId, code, { onOutput: (_s, d) => { got += d.length; } });
  const oursMs = performance.now() - t0;
  if (r.exitCode !== 0 || got !== lines * 100) throw new Error(`stream incomplete: ${got} of ${lines * 100} bytes, exit ${r.exitCode}`);
  log(BENCH, `streaming ${MB} MB through a raw dockerode exec attach…`);
  const raw = await dockerExec(container, ['python3', '-c', code]);
  if (raw.bytes !== lines * 100) throw new Error(`raw stream incomplete: ${raw.bytes}`);
  const oursMBs = got / 1e6 / (oursMs / 1000);
  const rawMBs = raw.bytes / 1e6 / (raw.ms / 1000);

  const rows: Array<[string, string]> = [
    ['print(1) round trip p50 / p99, flotilla (SDK → HTTP → manager → agent → runner)', `${fmt(a.p50, 2)} ms / ${fmt(a.p99, 2)} ms (n ${a.n})`],
    ['print(1) p50 / p99, dockerode exec of python3 -c in the same container', `${fmt(e.p50, 2)} ms / ${fmt(e.p99, 2)} ms (n ${e.n})`],
    ['speed-up at p50 (target ≥ 10×)', `${fmt(e.p50 / a.p50, 1)}×`],
    [`streaming ${MB} MB in 100-byte prints, flotilla (HTTP continue polls)`, `${fmt(oursMBs, 1)} MB/s (${fmt(oursMs / 1000, 2)} s)`],
    [`the same ${MB} MB through a raw dockerode exec attach`, `${fmt(rawMBs, 1)} MB/s (${fmt(raw.ms / 1000, 2)} s)`],
    ['throughput ratio (target ≥ 0.5×)', `${fmt(oursMBs / rawMBs, 2)}×`],
  ];
  for (const [k, v] of rows) console.log(`${k.padEnd(80)} ${v}`);
  writeResultsSection({
    title: 'Code execution (issue 4)',
    table: { headers: ['figure', 'value'], rows },
    ratio: `print(1) p50: dockerode exec / flotilla = **${fmt(e.p50 / a.p50, 1)}×** faster; 100 MB stream: flotilla / raw attach = **${fmt(oursMBs / rawMBs, 2)}×**`,
    notes: [
      'One process: in-process manager and agent on the real PostgreSQL, Redis and etcd; one python session (cpu 2, mem 1g). Round trips alternate in blocks of 20 (20 flotilla calls, a 200 ms pause, 20 docker execs, a pause) so drift hits both alike while a docker exec\'s process teardown, which goes on after its answer, does not land inside the next flotilla call (one call right after the other, flotilla\'s p50 was 5.8 ms against 4.4 ms in blocks on the same machine); 5 warm-up pairs not counted.',
      'A flotilla round trip is one `POST /session/{name}` (query mode); the agent answers as soon as the run finishes. The exec baseline pays process start-up of a fresh interpreter, which is what a query in a persistent interpreter avoids: that is the point of the runner.',
      'Streaming: the same Python code writes the bytes in both; flotilla relays them runner → agent (acknowledged JSON lines) → manager → HTTP `continue` replies of up to 4 MiB each; the baseline reads the exec\'s hijacked, multiplexed stream directly.',
      'print(1): met (≥ 10×). Streaming: not met yet (issue 4 stays open). Where the stream time goes: the runner alone, read through the agent\'s bridge without HTTP, delivers 62 MB/s for 100-byte prints (67 MB/s measured by its own test; 104 MB/s for 1000-byte prints, 126 MB/s for 100 KB) — every print is a Python-level write into the runner\'s ordered output queue, against C-level buffered writes in the baseline; the HTTP continue loop then halves that (a 4 MiB JSON reply per poll, stringified by the manager and parsed by the SDK). Next steps: a C-level buffered sys.stdout in the runner flushed by a timer and before stderr writes and child processes (tried: 2× faster, but it lost a subprocess\'s output in one ordering test, so it was reverted), and binary relaying of output between agent and manager.',
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
