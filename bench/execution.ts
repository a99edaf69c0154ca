// Code execution through the whole stack, against raw Docker in the same run and container:
//  1. round trip of `print(1)` in query mode (SDK → HTTP → manager → agent → runner → back),
//     p50/p99 over ≥ 200 calls, against dockerode `exec` of `python3 -c 'print(1)'`;
//  2. streaming throughput of one run printing 100 MB, against a raw dockerode exec attach
//     reading the same bytes from the same container.
// Streaming is measured through both client paths: HTTP `continue` polls (the SDK's run) and
// the WebSocket `GET /stream/session/{name}/execute` (what Backend.AI's `run` uses), in ROUNDS
// rounds of (HTTP, WebSocket, raw attach), medians reported, with the CPU seconds each process
// spent on each run.
// The manager and the agent run in their own processes (`bin/flotilla.js manager|agent`, as
// deployed); this process is the client (SDK, WebSocket client) and reads the raw attach.
// `--in-process` runs manager and agent in this process instead (one Node thread for all).
// Run: node --import tsx bench/execution.ts [--calls 200] [--mb 100] [--rounds 3] [--in-process] [--no-write]
import { readFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import Docker from 'dockerode';
import { WebSocket } from 'ws';
import { API_VERSION, signRequest } from '../schema/signing.ts';
import { flagArg, fmt, intArg, log, namedProcessesCpuSeconds, processCpuSeconds, progress, startBenchCluster, startBenchProcesses, summarize, writeResultsSection } from './lib.ts';

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

const IN_PROCESS = flagArg('in-process');
const WRITE = !flagArg('no-write');
const SETUP = IN_PROCESS
  ? 'One process: an in-process manager and agent (lib.ts startBenchCluster) on the real PostgreSQL, Redis and etcd, sharing one Node thread with the client (SDK, WebSocket client) and the raw attach reader.'
  : 'Three processes, as deployed: the manager (`bin/flotilla.js manager`) and the agent (`bin/flotilla.js agent`) each in its own process (lib.ts startBenchProcesses) on the real PostgreSQL, Redis and etcd; this process is the client (SDK, WebSocket client) and reads the raw attach.';

/** CPU seconds a container's processes have used so far (its cgroup: v1 cgroupfs, v2 cgroupfs or systemd); NaN if not found. */
function containerCpuSeconds(id: string): number {
  for (const [file, scale] of [[`/sys/fs/cgroup/cpuacct/docker/${id}/cpuacct.usage`, 1e-9], [`/sys/fs/cgroup/docker/${id}/cpu.stat`, 1e-6], [`/sys/fs/cgroup/system.slice/docker-${id}.scope/cpu.stat`, 1e-6]] as const) {
    try {
      const text = readFileSync(file, 'utf8');
      return Number(file.endsWith('cpu.stat') ? /usage_usec (\d+)/.exec(text)![1] : text.trim()) * scale;
    } catch { /* the next layout */ }
  }
  return NaN;
}
/** CPU seconds used so far by Docker's daemons: dockerd, containerd and every containerd-shim. */
const dockerCpuSeconds = () => namedProcessesCpuSeconds((comm) => comm === 'dockerd' || comm === 'containerd' || comm.startsWith('containerd-shim'));
const selfCpuSeconds = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };

const cluster = IN_PROCESS ? await startBenchCluster('execution', { agentSlots: 'cpu=2,mem=4g' }) : await startBenchProcesses('execution', { agentSlots: 'cpu=2,mem=4g' });
const { ak, sk, tag } = cluster;
const url = 'url' in cluster ? cluster.url : cluster.m.url;
const client = cluster.admin;
/** Who spent CPU on a run: this process (the client), manager, agent (separate processes only), the container, Docker's daemons. */
type Cpu = { client: number; manager: number; agent: number; container: number; docker: number };
let containerId = '';
const cpuNow = (): Cpu => ({
  client: selfCpuSeconds(),
  manager: 'manager' in cluster ? processCpuSeconds(cluster.manager.pid) : 0,
  agent: 'manager' in cluster && cluster.agent ? processCpuSeconds(cluster.agent.pid) : 0,
  container: containerCpuSeconds(containerId),
  docker: dockerCpuSeconds(),
});
/** Run fn; its result, and the CPU seconds per 100 MB each part spent meanwhile. */
async function withCpu<T>(fn: () => Promise<T>): Promise<{ value: T; cpu: Cpu }> {
  const c0 = cpuNow();
  const value = await fn();
  const c1 = cpuNow();
  const per = 100 / MB;
  return { value, cpu: { client: (c1.client - c0.client) * per, manager: (c1.manager - c0.manager) * per, agent: (c1.agent - c0.agent) * per, container: (c1.container - c0.container) * per, docker: (c1.docker - c0.docker) * per } };
}

try {
  const s = await client.sessions.create({ name: `bench-exec-${tag}`, image: 'python', resources: { cpu: 2, mem: '1g' } });
  if (s.status !== 'RUNNING') throw new Error(`session is ${s.status}`);
  const info = await client.sessions.get(s.sessionId);
  containerId = info.kernels[0].containerId!;
  const container = docker.getContainer(containerId);

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
    const u = new URL(`/stream/session/${s.sessionId}/execute`, url);
    const date = new Date().toISOString();
    const { authorization } = signRequest({ method: 'GET', pathWithQuery: u.pathname, date, host: u.host, version: API_VERSION, accessKey: ak, secretKey: sk });
    const t0 = performance.now();
    const ws = new WebSocket(u.toString().replace('http', 'ws'), { headers: { Date: date, 'X-BackendAI-Version': API_VERSION, Authorization: authorization } });
    let got = 0;
    let last: { status?: string; exitCode?: number | null } = {};
    await new Promise<void>((resolve, reject) => {
      ws.on('open', () => ws.send(JSON.stringify({ mode: 'query', code })));
      ws.on('message', (d, isBinary) => {
        if (isBinary) { reject(new Error('a binary frame: Backend.AI clients read text frames')); return; }
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
  const runs = { http: [] as Array<{ value: number; cpu: Cpu }>, ws: [] as Array<{ value: number; cpu: Cpu }>, raw: [] as Array<{ value: number; cpu: Cpu }> };
  for (let i = 0; i < ROUNDS; i++) {
    log(BENCH, `streaming ${MB} MB, round ${i + 1} of ${ROUNDS}: HTTP continue polls, WebSocket, raw attach…`);
    runs.http.push(await withCpu(viaHttp));
    runs.ws.push(await withCpu(viaWebSocket));
    runs.raw.push(await withCpu(viaRaw));
    log(BENCH, `round ${i + 1}: HTTP ${fmt(runs.http[i].value, 1)} MB/s, WebSocket ${fmt(runs.ws[i].value, 1)} MB/s, raw ${fmt(runs.raw[i].value, 1)} MB/s`);
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  const each = (xs: number[]) => xs.map((x) => fmt(x, 0)).join(', ');
  const mbs = (path: keyof typeof runs) => runs[path].map((r) => r.value);
  const [h, w, raw] = [median(mbs('http')), median(mbs('ws')), median(mbs('raw'))];
  /** Median CPU seconds per 100 MB of each part over a path's rounds. */
  const cpu = (path: keyof typeof runs) => {
    const part = (k: keyof Cpu) => fmt(median(runs[path].map((r) => r.cpu[k])), 2);
    const container = `runner container ${part('container')}, dockerd + containerd ${part('docker')}`;
    if (path === 'raw') return `this process (reading the attach) ${part('client')}, ${container}`;
    return IN_PROCESS ? `this process (client, manager and agent) ${part('client')}, ${container}` : `client ${part('client')}, manager ${part('manager')}, agent ${part('agent')}, ${container}`;
  };

  const rows: Array<[string, string]> = [
    ['print(1) round trip p50 / p99, flotilla (SDK → HTTP → manager → agent → runner)', `${fmt(a.p50, 2)} ms / ${fmt(a.p99, 2)} ms (n ${a.n})`],
    ['print(1) p50 / p99, dockerode exec of python3 -c in the same container', `${fmt(e.p50, 2)} ms / ${fmt(e.p99, 2)} ms (n ${e.n})`],
    ['speed-up at p50 (target ≥ 10×)', `${fmt(e.p50 / a.p50, 1)}×`],
    [`streaming ${MB} MB in 100-byte prints, flotilla, HTTP continue polls (SDK run): median MB/s (rounds)`, `${fmt(h, 1)} MB/s (${each(mbs('http'))})`],
    [`the same through the WebSocket execute stream (Backend.AI's run)`, `${fmt(w, 1)} MB/s (${each(mbs('ws'))})`],
    [`the same ${MB} MB through a raw dockerode exec attach`, `${fmt(raw, 1)} MB/s (${each(mbs('raw'))})`],
    ['throughput ratio, HTTP polls / raw (target ≥ 0.5×)', `${fmt(h / raw, 2)}×`],
    ['throughput ratio, WebSocket / raw (target ≥ 0.5×)', `${fmt(w / raw, 2)}×`],
    ['CPU seconds per 100 MB, HTTP polls (median of rounds)', cpu('http')],
    ['CPU seconds per 100 MB, WebSocket', cpu('ws')],
    ['CPU seconds per 100 MB, raw attach', cpu('raw')],
  ];
  for (const [k, v] of rows) console.log(`${k.padEnd(80)} ${v}`);
  if (WRITE) writeResultsSection({
    title: 'Code execution (issue 4)',
    table: { headers: ['figure', 'value'], rows },
    ratio: `print(1) p50: dockerode exec / flotilla = **${fmt(e.p50 / a.p50, 1)}×** faster; ${MB} MB stream: flotilla / raw attach = **${fmt(h / raw, 2)}×** over HTTP polls, **${fmt(w / raw, 2)}×** over the WebSocket`,
    notes: [
      `${SETUP} One python session (cpu 2, mem 1g). Round trips alternate in blocks of 20 (20 flotilla calls, a 200 ms pause, 20 docker execs, a pause) so drift hits both alike while a docker exec's process teardown, which goes on after its answer, does not land inside the next flotilla call; 5 warm-up pairs not counted.`,
      'A flotilla round trip is one `POST /session/{name}` (query mode); the agent answers as soon as the run finishes. The exec baseline pays process start-up of a fresh interpreter, which is what a query in a persistent interpreter avoids: that is the point of the runner.',
      `Streaming: the same Python code writes the bytes in both; ${ROUNDS} rounds of (HTTP, WebSocket, raw), the median of each reported with every round in brackets. Flotilla relays them runner → agent (acknowledged JSON lines over the container attach; an out line's data kept as the runner escaped it, checked, not decoded) → manager (socket.io RPC replies of up to 4 MiB, the output as binary attachments) → client, the manager splicing the escaped text into its JSON unchanged: either \`continue\` polls (\`client.sessions.run\`, one HTTP reply per poll, parsed by the SDK) or the WebSocket execute stream (the manager polls the agent every 100 ms and sends each reply as a text frame, JSON-parsed by this client). The baseline reads the exec's hijacked, multiplexed stream directly and only counts the bytes.`,
      'CPU seconds per 100 MB: of this process (process.cpuUsage), the manager and agent processes (/proc/<pid>/stat), the session\'s container (its cgroup\'s cpuacct: the runner, or the exec\'d python for the raw path) and Docker\'s daemons (dockerd, containerd and every containerd-shim on the host, /proc). They explain the ratio: the host has 2 cores, and the raw path needs about 1–2 CPU seconds per 100 MB in all, flotilla\'s 5.5–7.5 (three processes) and 5–6 (one).',
      'print(1): met (≥ 10×). Streaming target (≥ 0.5×): NOT met, and not reachable on this machine by the relay alone (issue 4 is reported blocked on it). Of flotilla\'s CPU per 100 MB, the runner container (about 0.8–1.3 s: escaping into JSON lines, a pump thread and its GIL, against 0.2–0.3 s for the raw python writing to a pipe) and Docker\'s daemons (about 1.0 s: the attach copy and the json-file log of every protocol byte) already take about 2–2.5 s; with the client\'s unavoidable JSON.parse of 100 MB of console text (about 0.7 s in V8, measured alone) that leaves nothing for manager and agent within the ~2.5–3 s that 0.5× of the raw rate allows on 2 cores. A bounded log driver (`local`, 2 × 16 MB, uncompressed) was tried and left dockerd\'s share unchanged within the noise (1.04 against 1.12 s per 100 MB), so the container log config was not changed.',
      'What changed the relay (issue 4 work, measured with this bench on this machine; other suites ran meanwhile, load average 4–7, so absolute rates moved ±40 % between runs): (1) bufferutil, so ws masks natively; (2) output kept as JSON string bodies from the runner to the client: the agent parses only an out line\'s head and checks its data (about 0.15 s per 100 MB) instead of decoding and JSON.parse-ing it, socket.io carries it as binary attachments instead of JSON strings, the manager writes it into the HTTP reply and WebSocket frame without decoding or escaping it again; (3) /watch decodes output only for a subscriber that receives it and fans it out to other managers only while one announced interest (before: every chunk JSON-encoded into Redis and parsed back by the manager itself). In one process this took the streaming rate from 13–17 MB/s to 29–48 MB/s (0.10–0.11× to 0.20–0.33× of raw); CPU profiles of the whole bench process (--calls 10 --rounds 2: 400 MB through flotilla, 200 MB raw) showed 29.5 s of its thread busy before and 11.0 s after.',
      'The same bench with `--in-process` (manager and agent in this process, --calls 20, 2026-12-05 on this machine under the same load, not written here): HTTP 21.4 MB/s (19, 21, 32), WebSocket 24.1 MB/s (22, 24, 31), raw 74.5 MB/s (74, 40, 105): 0.29× and 0.32×, with 2.85 / 2.34 s of Node CPU per 100 MB in all, less than the three processes spend together (their agent alone about 2 s): on 2 cores split processes run in parallel but each pays its own copies, masking and garbage collection.',
      'Left in the agent (CPU profile of its process): garbage collection is its largest item (about 1 s per 100 MB), then Buffer copies (lines split across attach chunks, coalescing, ws masking into a new frame) and the escaped-data check. Next steps, none of them in the relay\'s JSON any more: fewer copies in the agent (coalescing in the manager instead), and the runner and Docker side (out of this bench\'s reach: the runner image and createKernel belong to other work).',
      "Tried on 2026-12-05 (evening) and not kept: (1) a runner whose sys.stdout buffer is queued as output directly (a Python raw stream under the C-level buffer) instead of going through the fd 1 pipe and the pump thread: alone (runner.py driven over pipes on the host, 100 MB in 100-byte writes) 1.2–1.5 CPU-s per 100 MB against 1.0–1.1, slower, the printing thread now encoding and posting itself; (2) glibc malloc thresholds (MALLOC_MMAP_THRESHOLD_ 4 MiB, MALLOC_TRIM_THRESHOLD_ 64 MiB) for this process, the manager and the agent, and mallopt() in the runner: the runner alone faulted in the same ~45,000 pages per 100 MB either way, and paired runs of this bench (--calls 20) gave WebSocket 33 and 39 MB/s with them against 44 and 39 without: no gain. The same day's runs of this bench (--calls 20, --no-write): WebSocket 37–44 MB/s against raw 150–153 MB/s (0.24–0.29×), CPU per 100 MB client 0.8–1.0, manager 0.5–0.7, agent 1.1–1.3, runner container 0.7–0.8, Docker's daemons 0.8–0.9: 3.9–4.7 CPU-s on a path where 0.5× of raw allows about 2.7.",
    ],
  });
} finally {
  await cluster.close();
}
