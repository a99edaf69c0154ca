// The shared harness of flotilla's benchmarks (DESIGN.md §1: figures are ratios against a
// baseline measured in the same run, on the same machine). Each benchmark is a plain script
// (`node --import tsx bench/<name>.ts`) that measures, verifies what it wrote, and records its
// figures as one section of bench/RESULTS.md.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import pg from 'pg';
import { FINAL_SESSION_STATUSES } from '../schema/status.ts';
import { migrate } from '../schema/migrate.ts';
import { openPostgres } from '../runtime/stores/postgres.ts';
import type { Database, Stores } from '../runtime/stores/types.ts';
import { loadProcessSettings } from '../config/settings.ts';
import { startAgent, type RunningAgent } from '../runtime/agent/index.ts';
import { createLogger, type Logger } from '../runtime/log.ts';
import { startManager, type RunningManager } from '../runtime/manager/index.ts';
import { missingManagerFlags, nodeFlagsFor } from '../runtime/manager/node-flags.ts';
import { Client } from '../runtime/sdk/index.ts';
import { openStores } from '../runtime/stores/index.ts';

export const RESULTS_PATH = fileURLToPath(new URL('./RESULTS.md', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

// ---- numbers

/** Nearest-rank percentile (p in 0..100) of a list of durations; NaN for an empty list. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export interface Summary { n: number; min: number; p50: number; p99: number; max: number; mean: number }

export function summarize(values: readonly number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
  return {
    n: sorted.length,
    min: sorted[0] ?? NaN,
    p50: at(50) ?? NaN,
    p99: at(99) ?? NaN,
    max: sorted[sorted.length - 1] ?? NaN,
    mean: sorted.length ? sorted.reduce((s, v) => s + v, 0) / sorted.length : NaN,
  };
}

/** Per second, from a count and a duration in ms. */
export const perSecond = (count: number, ms: number) => (count * 1000) / ms;

/** 12345.6 → "12,346"; small values keep a decimal or two so they stay readable. */
export function fmt(n: number, digits?: number): string {
  if (!Number.isFinite(n)) return String(n);
  const d = digits ?? (Math.abs(n) >= 100 ? 0 : Math.abs(n) >= 10 ? 1 : 2);
  return n.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
}

// ---- output: progress and timings go to stderr, so stdout stays the figures alone

export function log(bench: string, msg: string): void {
  process.stderr.write(`[bench] ${bench}: ${msg}\n`);
}

export interface Progress { tick(n?: number): void; done(): void }

/**
 * A progress line every 10 % (and at most every 250 ms), so a long phase never looks hung:
 * `[bench] durable-writes: batched 40% (4,800/12,000, 1.2 s)`.
 */
export function progress(bench: string, phase: string, total: number): Progress {
  const start = performance.now();
  let count = 0;
  let lastStep = 0;
  let lastAt = 0;
  const line = () => log(bench, `${phase} ${Math.floor((count / total) * 100)}% (${fmt(count, 0)}/${fmt(total, 0)}, ${fmt((performance.now() - start) / 1000, 1)} s)`);
  return {
    tick(n = 1) {
      count += n;
      const step = Math.floor((count / total) * 10);
      const now = performance.now();
      if (step > lastStep && step < 10 && now - lastAt >= 250) { lastStep = step; lastAt = now; line(); }
    },
    done() { count = total; line(); },
  };
}

/** Time fn (wall clock, ms) and log it. */
export async function measure<T>(label: string, fn: () => Promise<T> | T, bench = 'bench'): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  const value = await fn();
  const ms = performance.now() - start;
  log(bench, `${label}: ${fmt(ms, 1)} ms`);
  return { value, ms };
}

// ---- the machine and the command, for the record

export interface Machine { nproc: number; memoryGiB: number; cpu: string; os: string; node: string }

export function machineInfo(): Machine {
  return {
    // availableParallelism follows the CPU affinity mask, as nproc does.
    nproc: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    os: `${os.type()} ${os.release()}`,
    node: process.version,
  };
}

export const describeMachine = (m = machineInfo()) =>
  `nproc ${m.nproc}, memory ${m.memoryGiB} GiB, ${m.cpu}, ${m.os}, Node ${m.node}`;

/**
 * A bench whose manager runs in this process runs it as deployed: with the manager's node flags
 * (runtime/manager/node-flags.ts). Started without them, the bench runs itself again with them
 * (its output and exit code are the second run's) and this process never returns from here.
 */
export async function relaunchWithManagerFlags(): Promise<void> {
  const missing = missingManagerFlags();
  if (!missing.length) return;
  log('bench', `running again with the manager's node flags: ${missing.join(' ')}`);
  const child = spawn(process.execPath, [...missing, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit' });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));
  const code = await new Promise<number>((resolve) => child.on('exit', (c, sig) => resolve(c ?? (sig ? 1 : 0))));
  process.exit(code);
}

/** The exact command line this process was started with, relative to the repository root. */
export function commandLine(): string {
  const script = path.relative(REPO_ROOT, process.argv[1] ?? '') || process.argv[1];
  return ['node', ...process.execArgv, script, ...process.argv.slice(2)].map(shellQuote).join(' ');
}
const shellQuote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/** `--name value` from the command line, as a positive integer. */
export function intArg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v <= 0) throw new Error(`--${name} wants a positive integer, got ${process.argv[i + 1]}`);
  return v;
}
export const flagArg = (name: string) => process.argv.includes(`--${name}`);

// ---- a throwaway database on the real PostgreSQL

export interface BenchDatabase {
  name: string;
  url: string;
  /** The project's store over it (pool of `poolMax`), already migrated. */
  db: Database;
  drop(): Promise<void>;
}

/** The server to benchmark on: scripts/services' PostgreSQL, never the embedded PGlite. */
export function adminUrl(): string {
  const url = process.env.FLOTILLA_BENCH_DATABASE_URL ?? process.env.FLOTILLA_DATABASE_URL;
  if (!url || !/^postgres(ql)?:\/\//.test(url)) {
    throw new Error('benchmarks run on the real PostgreSQL: run `eval "$(scripts/services env)"` first ' +
      '(and `scripts/services start postgres` if it is down), or set FLOTILLA_BENCH_DATABASE_URL');
  }
  return url;
}

async function adminQuery(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl() });
  await c.connect();
  try { await c.query(sql); } finally { await c.end(); }
}

/**
 * Plain DROP DATABASE, not WITH (FORCE): FORCE also tries to terminate an autovacuum worker that
 * is in the database (likely right after a write-heavy benchmark), which a non-superuser role may
 * not do (42501). Plain DROP cancels autovacuum by itself; our own pool is closed by then, so
 * "being accessed by other users" (55006) can only be a backend on its way out: retry briefly.
 */
async function dropDatabase(name: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await adminQuery(`DROP DATABASE IF EXISTS ${name}`);
      return;
    } catch (e) {
      if ((e as { code?: string }).code !== '55006' || attempt >= 20) throw e;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

export interface BenchDatabaseOptions {
  poolMax?: number;
  /**
   * Runs before the database is dropped, on drop() and on Ctrl-C: a benchmark that started a
   * manager on the database closes it here (its pool would keep DROP DATABASE from succeeding) and
   * removes the containers it made. Errors are logged, never keep the database from being dropped.
   */
  beforeDrop?: () => Promise<unknown>;
}

/** CREATE DATABASE flotilla_bench_<rand>, migrate it; drop() removes it (also on Ctrl-C). */
export async function freshBenchDatabase(opts: BenchDatabaseOptions = {}): Promise<BenchDatabase> {
  const name = `flotilla_bench_${randomBytes(5).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${name}`);
  const u = new URL(adminUrl());
  u.pathname = `/${name}`;
  const url = u.toString();
  const db = openPostgres({ url, max: opts.poolMax ?? 10, queryTimeoutMs: 120_000 });
  let dropped = false;
  // An interrupted benchmark must not leave its database behind.
  const onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`[bench] ${sig}: dropping ${name}\n`);
    void drop().finally(() => process.exit(130));
  };
  async function drop(): Promise<void> {
    if (dropped) return;
    dropped = true;
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (opts.beforeDrop) await opts.beforeDrop().catch((e: Error) => process.stderr.write(`[bench] cleanup before dropping ${name} failed: ${e.message}\n`));
    await db.close().catch(() => undefined);
    await dropDatabase(name);
  }
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await migrate(db);
  } catch (e) {
    await drop();
    throw e;
  }
  return { name, url, db, drop };
}

/** Run fn on a fresh database and drop it afterwards, whatever fn does. */
export async function withBenchDatabase<T>(fn: (b: BenchDatabase) => Promise<T>, opts: BenchDatabaseOptions = {}): Promise<T> {
  const b = await freshBenchDatabase(opts);
  try { return await fn(b); } finally { await b.drop(); }
}

/** Server version and the settings that decide what a commit costs, for the record. */
export async function postgresInfo(db: Database): Promise<string> {
  const r = await db.query<{ name: string; setting: string }>(
    `SELECT name, setting FROM pg_settings WHERE name IN ('server_version', 'synchronous_commit', 'fsync', 'wal_sync_method', 'shared_buffers', 'commit_delay') ORDER BY name`);
  const s = Object.fromEntries(r.rows.map((x) => [x.name, x.setting]));
  return `PostgreSQL ${s.server_version} (fsync=${s.fsync}, synchronous_commit=${s.synchronous_commit}, wal_sync_method=${s.wal_sync_method}, commit_delay=${s.commit_delay}, shared_buffers=${s.shared_buffers}×8kB)`;
}

// ---- bench/RESULTS.md

export interface ResultsSection {
  /** The section's heading; a section with the same title is replaced in place. */
  title: string;
  /** Defaults to the command line of this process. */
  command?: string;
  date?: Date;
  machine?: string;
  /** Extra lines under the machine (store versions and settings). */
  environment?: string[];
  table: { headers: string[]; rows: Array<Array<string | number>> };
  ratio: string;
  notes?: string[];
}

const RESULTS_HEADER = `# Benchmark results

Each section is written by the benchmark its command runs (\`bench/lib.ts\` writeResultsSection), on
the machine it names; a new run replaces its section. Figures are ratios against a baseline measured
in the same run, so they compare across machines better than the absolute numbers do.
`;

export function renderSection(s: ResultsSection): string {
  const cell = (v: string | number) => String(typeof v === 'number' ? fmt(v) : v).replace(/\|/g, '\\|');
  const lines = [
    `## ${s.title}`,
    '',
    `- **date:** ${(s.date ?? new Date()).toISOString()}`,
    `- **machine:** ${s.machine ?? describeMachine()}`,
    ...(s.environment ?? []).map((e) => `- ${e}`),
    `- **command:** \`${s.command ?? commandLine()}\``,
    '',
    `| ${s.table.headers.join(' | ')} |`,
    `| ${s.table.headers.map((_, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`,
    ...s.table.rows.map((r) => `| ${r.map(cell).join(' | ')} |`),
    '',
    `**Ratio:** ${s.ratio}`,
  ];
  if (s.notes?.length) lines.push('', '**Notes:**', '', ...s.notes.map((n) => `- ${n}`));
  return lines.join('\n') + '\n';
}

/** Append the section to bench/RESULTS.md, or replace the section of the same title. */
export function writeResultsSection(s: ResultsSection, file = RESULTS_PATH): void {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : RESULTS_HEADER;
  // Split before every level-2 heading; part 0 is the file's header.
  const parts = text.split(/^(?=## )/m);
  const body = renderSection(s);
  const i = parts.findIndex((p, n) => n > 0 && p.slice(3, p.indexOf('\n')).trim() === s.title);
  if (i > 0) parts[i] = body + '\n';
  else {
    if (!parts[parts.length - 1].endsWith('\n\n')) parts[parts.length - 1] = parts[parts.length - 1].replace(/\n*$/, '\n\n');
    parts.push(body + '\n');
  }
  // Write then rename, so an interrupted run never leaves half a file.
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, parts.join('').replace(/\n+$/, '\n'));
  renameSync(tmp, file);
}

// ---- an in-process cluster on a throwaway database

export interface BenchCluster {
  tag: string; ak: string; sk: string; b: BenchDatabase; stores: Stores; m: RunningManager; log: Logger;
  /** An SDK client with the admin keypair. */
  admin: Client;
  agent?: RunningAgent;
  /** End live sessions, stop agent and manager, close the stores, drop the database. */
  close(): Promise<void>;
}

/**
 * A manager (and, with `agentSlots`, one agent) in this process on the real PostgreSQL (a fresh
 * database), Redis and etcd (a namespace `bench/<name>-<tag>/`), signed in as a new admin keypair.
 */
export async function startBenchCluster(name: string, opts: { agentSlots?: string } = {}): Promise<BenchCluster> {
  await relaunchWithManagerFlags();
  const tag = randomBytes(4).toString('hex');
  const ak = `AK${randomBytes(9).toString('hex').toUpperCase()}`;
  const sk = randomBytes(20).toString('base64');
  const b = await freshBenchDatabase();
  const settings = loadProcessSettings({
    ...process.env, FLOTILLA_DATABASE_URL: b.url, FLOTILLA_ETCD_NAMESPACE: `bench/${name}-${tag}/`, FLOTILLA_MANAGER_PORT: '0',
    FLOTILLA_ADMIN_ACCESS_KEY: ak, FLOTILLA_ADMIN_SECRET_KEY: sk,
  });
  const log = createLogger('bench', 'error');
  const stores = await openStores(settings);
  const m = await startManager({ settings, stores, log });
  let agent: RunningAgent | undefined;
  if (opts.agentSlots) {
    agent = await startAgent({ agentId: `i-bench-${name}-${tag}`, managerUrls: [m.url], token: m.agentToken, resourceGroup: 'default', slots: opts.agentSlots, log });
    await agent.registered;
  }
  return {
    tag, ak, sk, b, stores, m, log, agent, admin: new Client({ endpoint: m.url, accessKey: ak, secretKey: sk }),
    async close() {
      for (const id of m.supervisor.liveSessionIds()) m.supervisor.send(id, { type: 'TERMINATE', reason: 'bench-cleanup', forced: true });
      const until = Date.now() + 15_000;
      while (m.supervisor.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      await agent?.close();
      await m.close();
      if (agent) await removeLeftovers(stores, agent.agentId);
      await stores.close();
      await b.drop();
    },
  };
}

/** What a benchmark's cluster leaves behind: the agent's containers (by label) and the etcd namespace. */
async function removeLeftovers(stores: Stores, agentId: string): Promise<void> {
  const docker = new Docker();
  for (const c of await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`ai.flotilla.agent-id=${agentId}`] }) }).catch(() => [])) {
    await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
  }
  for (const k of Object.keys(await stores.config.getPrefix('').catch(() => ({})))) await stores.config.delete(k).catch(() => undefined);
}

// ---- daemons in their own processes, as deployed

const BIN = fileURLToPath(new URL('../bin/flotilla.js', import.meta.url));

export interface Daemon {
  child: ChildProcess;
  pid: number;
  /** What `ready` matched in its output. */
  match: RegExpMatchArray;
  /** Its output so far (the last 50 kB or more). */
  output(): string;
  exited: Promise<number | null>;
  /** SIGTERM (a graceful stop) and wait for the exit. */
  stop(): Promise<void>;
}

/**
 * `bin/flotilla.js <args>` in its own process; resolves once its stdout or stderr matches `ready`.
 * Extra node arguments (e.g. `--cpu-prof`) come from BENCH_<COMMAND>_NODE_ARGS (BENCH_MANAGER_NODE_ARGS, ...).
 */
export function spawnDaemon(args: string[], env: Record<string, string>, ready: RegExp, timeoutMs = 60_000): Promise<Daemon> {
  const nodeArgs = (process.env[`BENCH_${args[0].toUpperCase()}_NODE_ARGS`] ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...nodeFlagsFor(args[0]), ...nodeArgs, BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args[0]} was not ready within ${timeoutMs / 1000} s:\n${out.slice(-3000)}`)), timeoutMs);
    let matched = false;
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      if (out.length > 100_000) out = out.slice(-50_000);
      const m = matched ? null : ready.exec(out);
      if (!m) return;
      matched = true;
      clearTimeout(timer);
      resolve({
        child, pid: child.pid!, match: m, output: () => out, exited,
        async stop() { if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM'); await exited; },
      });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then((code) => { clearTimeout(timer); if (!matched) reject(new Error(`${args[0]} exited with ${code}:\n${out.slice(-3000)}`)); });
  });
}

/** CPU seconds (user + system, every thread) process `pid` has used so far (Linux /proc, USER_HZ 100). */
export function processCpuSeconds(pid: number): number {
  return statCpuSeconds(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/** utime + stime of a /proc/<pid>/stat line (after the command name, which may hold spaces), with cutime + cstime when `reaped`. */
function statCpuSeconds(stat: string, reaped = false): number {
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12]) + (reaped ? Number(f[13]) + Number(f[14]) : 0)) / 100;
}

/**
 * CPU seconds used so far by every process on the host whose command name `comm` matches (Linux
 * /proc). With `reaped`, also what their children that have exited used (cutime, cstime): for a
 * server that forks a process per connection (PostgreSQL), so a connection closed within the
 * measured window does not take its CPU out of the sum.
 */
export function namedProcessesCpuSeconds(match: (comm: string) => boolean, opts: { reaped?: boolean } = {}): number {
  const scan = () => {
    let sum = 0;
    const pids: string[] = [];
    for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        if (!match(stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')))) continue;
        sum += statCpuSeconds(stat, opts.reaped);
        pids.push(pid);
      } catch { /* gone meanwhile */ }
    }
    return { sum, pids: pids.join(' ') };
  };
  // A process that exits during a scan (its CPU not yet in its parent's reaped times when the
  // parent was read) would drop out of the sum: scan until two scans see the same processes.
  let last = scan();
  for (let i = 0; i < 5; i++) {
    const next = scan();
    if (next.pids === last.pids) return next.sum;
    last = next;
  }
  return last.sum;
}

export interface BenchProcesses {
  tag: string; ak: string; sk: string; b: BenchDatabase; stores: Stores;
  /** The manager's base URL. */
  url: string;
  manager: Daemon;
  agent?: Daemon & { agentId: string };
  /** An SDK client with the admin keypair. */
  admin: Client;
  /** Destroy live sessions, stop agent and manager, remove the agent's containers, the etcd namespace and the database. */
  close(): Promise<void>;
}

/**
 * A manager (`bin/flotilla.js manager`) and, with `agentSlots`, one agent (`bin/flotilla.js agent`),
 * each in its own process as deployed, on the real PostgreSQL (a fresh database), Redis and etcd
 * (a namespace `bench/<name>-<tag>/`), signed in as a new admin keypair. This process is their client.
 */
export async function startBenchProcesses(name: string, opts: { agentSlots?: string } = {}): Promise<BenchProcesses> {
  const tag = randomBytes(4).toString('hex');
  const ak = `AK${randomBytes(9).toString('hex').toUpperCase()}`;
  const sk = randomBytes(20).toString('base64');
  const agentId = `i-bench-${name}-${tag}`;
  let manager: Daemon | undefined;
  let agent: Daemon | undefined;
  let admin: Client | undefined;
  const stop = async () => {
    if (admin) {
      const live = (await admin.sessions.list({ limit: 1000 }).catch(() => ({ items: [] }))).items.filter((x) => !FINAL_SESSION_STATUSES.includes(x.status));
      await Promise.all(live.map((x) => admin!.sessions.destroy(x.sessionId, { forced: true }).catch(() => undefined)));
    }
    await agent?.stop();
    await manager?.stop();
    await removeLeftovers(stores, agentId);
    await stores.close();
  };
  const b = await freshBenchDatabase({ beforeDrop: stop });
  const env: Record<string, string> = {
    FLOTILLA_DATABASE_URL: b.url, FLOTILLA_ETCD_NAMESPACE: `bench/${name}-${tag}/`, FLOTILLA_MANAGER_PORT: '0',
    FLOTILLA_ADMIN_ACCESS_KEY: ak, FLOTILLA_ADMIN_SECRET_KEY: sk, FLOTILLA_LOG_LEVEL: 'error', FLOTILLA_SECRET_ENCRYPTION_KEY: `bench-${tag}`,
  };
  const stores = await openStores(loadProcessSettings({ ...process.env, ...env }));
  try {
    manager = await spawnDaemon(['manager'], env, /manager listening on (http:\/\/\S+)/);
    const url = manager.match[1];
    admin = new Client({ endpoint: url, accessKey: ak, secretKey: sk, timeoutMs: 600_000 });
    if (opts.agentSlots) {
      agent = await spawnDaemon(['agent', '--id', agentId, '--slots', opts.agentSlots], { ...env, FLOTILLA_MANAGER_URLS: url }, /dialling/);
      // Ready for sessions once the manager lists it connected.
      for (const until = Date.now() + 30_000; ;) {
        const list = await admin.request<Array<{ agentId: string; connected: boolean; status: string }>>('GET', '/admin/agents');
        if (list.some((a) => a.agentId === agentId && a.connected && a.status === 'ALIVE')) break;
        if (Date.now() > until) throw new Error(`agent ${agentId} did not register within 30 s:\n${agent.output().slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    return { tag, ak, sk, b, stores, url, manager, agent: agent && Object.assign(agent, { agentId }), admin, close: () => b.drop() };
  } catch (e) {
    await b.drop();
    throw e;
  }
}
