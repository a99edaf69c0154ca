// `flotilla up`, the quick start's all-in-one mode, as a user runs it: one process with the
// manager, an agent, embedded PostgreSQL (PGlite) and the in-process stand-ins, real Docker.
// It starts a session and stays up; stopped and started again, it restores that session.
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { nodeFlagsFor } from '../../runtime/manager/node-flags.ts';
import { Client } from '../../runtime/sdk/index.ts';
import { suite } from '../helpers/suite.ts';

const BIN = new URL('../../bin/flotilla.js', import.meta.url).pathname;
const docker = new Docker();
const t = suite<{ dir: string; port: number; agentId: string }>('flotilla up (all-in-one)', { timeoutMs: 180_000 });

const freePort = () => new Promise<number>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => resolve(p)); });
});

function up(ctx: { dir: string; port: number; agentId: string }): Promise<{ child: ChildProcess; out: () => string }> {
  // The all-in-one mode: no store addresses at all.
  const env: NodeJS.ProcessEnv = { ...process.env, FLOTILLA_DATA_DIR: ctx.dir, FLOTILLA_MANAGER_PORT: String(ctx.port), FLOTILLA_AGENT_ID: ctx.agentId };
  for (const k of ['FLOTILLA_DATABASE_URL', 'FLOTILLA_REDIS_URL', 'FLOTILLA_ETCD_ENDPOINTS', 'FLOTILLA_ETCD_NAMESPACE', 'FLOTILLA_ADMIN_ACCESS_KEY', 'FLOTILLA_ADMIN_SECRET_KEY']) delete env[k];
  const child = spawn(process.execPath, [...nodeFlagsFor('up'), BIN, 'up'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (b) => { out += b; });
  child.stderr!.on('data', (b) => { out += b; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`flotilla up not up in time:\n${out}`)), 150_000);
    const check = setInterval(() => {
      if (/flotilla is up/.test(out)) { clearTimeout(timer); clearInterval(check); resolve({ child, out: () => out }); }
    }, 100);
    child.on('exit', (code) => { clearTimeout(timer); clearInterval(check); reject(new Error(`flotilla up exited (${code}):\n${out}`)); });
  });
}

async function stop(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  child.kill('SIGTERM');
  return exited;
}

t.before(async (ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'flotilla-up-'));
  ctx.port = await freePort();
  ctx.agentId = `i-up-${Math.random().toString(36).slice(2, 8)}`;
});
t.after(async (ctx) => {
  const left = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`ai.flotilla.agent-id=${ctx.agentId}`] }) });
  for (const c of left) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
  rmSync(ctx.dir, { recursive: true, force: true });
});

t('starts a session that is RUNNING, prints the endpoint and keys once, and restores it after a restart', async (ctx) => {
  const first = await up(ctx);
  const out = first.out();
  assert.match(out, new RegExp(`manager: http://127.0.0.1:${ctx.port}`));
  assert.match(out, /FLOTILLA_ACCESS_KEY=AK[A-Z0-9]{18}/);
  assert.match(out, /session quickstart \([0-9a-f-]{36}\) is RUNNING/);
  assert.match(out, /history: PENDING → SCHEDULED → PREPARING → RUNNING/);
  assert.match(out, /stores: PostgreSQL pglite \(embedded\), liveness memory \(embedded\), config memory \(embedded\)/);
  const env = readFileSync(join(ctx.dir, 'admin.env'), 'utf8');
  const accessKey = /FLOTILLA_ACCESS_KEY=(\S+)/.exec(env)![1];
  const secretKey = /FLOTILLA_SECRET_KEY=(\S+)/.exec(env)![1];
  const client = new Client({ endpoint: `http://127.0.0.1:${ctx.port}`, accessKey, secretKey });
  const info = await client.sessions.get('quickstart');
  assert.is(info.status, 'RUNNING');
  const c = await docker.getContainer(info.kernels[0].containerId!).inspect();
  assert.ok(c.State.Running);
  assert.is(c.Config.Labels['ai.flotilla.agent-id'], ctx.agentId);
  assert.is(await stop(first.child), 0);

  // Started again: the same session, restored from the embedded database; keys not printed again.
  const second = await up(ctx);
  assert.not.match(second.out(), /FLOTILLA_SECRET_KEY=/);
  assert.match(second.out(), new RegExp(`session quickstart \\(${info.sessionId}\\) is RUNNING`));
  const again = await client.sessions.get('quickstart');
  assert.is(again.sessionId, info.sessionId);
  assert.is(again.kernels[0].containerId, info.kernels[0].containerId);
  await client.sessions.destroy('quickstart');
  assert.is((await client.sessions.get(info.sessionId)).status, 'TERMINATED');
  assert.is(await stop(second.child), 0);
});

t.run();
