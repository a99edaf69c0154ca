// The `flotilla` command line as scripts use it, against a real manager process and agent:
// schema migrate (twice), config load, and session create / ls / info / logs / rm with the exit
// codes scripts rely on.
import * as assert from 'uvu/assert';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { openEtcd } from '../../runtime/stores/etcd.ts';
import { freshDatabase, realServices } from '../helpers/services.ts';
import { startCluster, type TestCluster } from '../helpers/processes.ts';
import { eventually, suite } from '../helpers/suite.ts';

const BIN = new URL('../../bin/flotilla.js', import.meta.url).pathname;
const docker = new Docker();

function flotilla(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

const t = suite<{ c: TestCluster; env: Record<string, string>; agentId: string }>('flotilla CLI', { timeoutMs: 120_000 });
const vfolderRoot = mkdtempSync(join(tmpdir(), 'flotilla-cli-vf-'));

t.before(async (ctx) => {
  ctx.c = await startCluster({ config: { 'vfolder.root': vfolderRoot } });
  ctx.agentId = `i-cli-${Math.random().toString(36).slice(2, 8)}`;
  await ctx.c.startAgent(ctx.agentId);
  ctx.env = { FLOTILLA_MANAGER_URLS: ctx.c.manager.url, FLOTILLA_ACCESS_KEY: ctx.c.accessKey, FLOTILLA_SECRET_KEY: ctx.c.secretKey };
});
t.after(async (ctx) => {
  await ctx.c?.stop();
  const left = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`ai.flotilla.agent-id=${ctx.agentId}`] }) });
  for (const c of left) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
});

t('schema migrate applies the migrations once and then finds the schema up to date', async () => {
  const db = await freshDatabase();
  try {
    const first = await flotilla(['schema', 'migrate'], { FLOTILLA_DATABASE_URL: db.url });
    assert.is(first.code, 0, first.stderr);
    assert.match(first.stdout, /applied migrations: 1/);
    const second = await flotilla(['schema', 'migrate'], { FLOTILLA_DATABASE_URL: db.url });
    assert.is(second.code, 0, second.stderr);
    assert.match(second.stdout, /schema is up to date/);
  } finally { await db.drop(); }
});

t('config load validates the file and stores it in etcd; a bad file changes nothing and exits 2', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-cli-'));
  const ns = `test/cli-${Math.random().toString(36).slice(2, 8)}/`;
  const env = { FLOTILLA_ETCD_ENDPOINTS: realServices.etcdEndpoints.join(','), FLOTILLA_ETCD_NAMESPACE: ns };
  writeFileSync(join(dir, 'good.json'), JSON.stringify({ 'heartbeat.timeout': 4000, 'vfolder.root': '/srv/vfolders' }));
  writeFileSync(join(dir, 'bad.json'), JSON.stringify({ 'heartbeat.timeout': 'soon' }));
  const good = await flotilla(['config', 'load', join(dir, 'good.json')], env);
  assert.is(good.code, 0, good.stderr);
  const bad = await flotilla(['config', 'load', join(dir, 'bad.json')], env);
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /heartbeat\.timeout/);
  const etcd = openEtcd({ endpoints: realServices.etcdEndpoints, namespace: ns });
  try {
    assert.equal(await etcd.getPrefix('flotilla/config/'), { 'flotilla/config/heartbeat.timeout': '4000', 'flotilla/config/vfolder.root': '/srv/vfolders' });
    for (const k of Object.keys(await etcd.getPrefix(''))) await etcd.delete(k);
  } finally { await etcd.close(); }
});

t('session create, ls, info, logs and rm work as a script expects', async ({ env }) => {
  const created = await flotilla(['session', 'create', 'python', '--name', 'cli-one', '--cpu', '1', '--mem', '512m', '--json'], env);
  assert.is(created.code, 0, created.stderr);
  const body = JSON.parse(created.stdout) as { sessionId: string; status: string };
  assert.is(body.status, 'RUNNING');
  const ls = await flotilla(['session', 'ls', '--json'], env);
  assert.is(ls.code, 0, ls.stderr);
  assert.ok((JSON.parse(ls.stdout) as { items: Array<{ sessionName: string }> }).items.some((s) => s.sessionName === 'cli-one'));
  const info = await flotilla(['session', 'info', 'cli-one'], env);
  assert.is(info.code, 0, info.stderr);
  assert.match(info.stdout, /RUNNING/);
  assert.match(info.stdout, /PENDING/);
  const logs = await eventually(async () => {
    const l = await flotilla(['session', 'logs', 'cli-one'], env);
    return l.code === 0 && /"op":"ready"/.test(l.stdout) ? l : undefined;
  }, 15_000, 'session logs with the runner\'s ready line');
  assert.match(logs.stdout, /"op":"ready"/);
  // restart: a fresh interpreter in the same session.
  assert.is((await flotilla(['exec', 'cli-one', '-c', 'kept = 1'], env)).code, 0);
  const restarted = await flotilla(['session', 'restart', 'cli-one'], env);
  assert.is(restarted.code, 0, restarted.stderr);
  assert.match(restarted.stdout, /restarted session cli-one: RUNNING/);
  const gone = await flotilla(['exec', 'cli-one', '-c', 'print(kept)'], env);
  assert.is(gone.code, 1);
  assert.match(gone.stderr, /NameError/);
  const rm = await flotilla(['session', 'rm', 'cli-one'], env);
  assert.is(rm.code, 0, rm.stderr);
  const after = await flotilla(['session', 'info', body.sessionId, '--json'], env);
  assert.is((JSON.parse(after.stdout) as { status: string }).status, 'TERMINATED');
});

t('upload, ls and download move files in and out of a session', async ({ env }) => {
  const created = await flotilla(['session', 'create', 'python', '--name', 'cli-files', '--json'], env);
  assert.is(created.code, 0, created.stderr);
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-cli-files-'));
  writeFileSync(join(dir, 'hello.txt'), 'hello from the CLI\n');
  const up = await flotilla(['upload', 'cli-files', join(dir, 'hello.txt'), '--basedir', dir], env);
  assert.is(up.code, 0, up.stderr);
  const ls = await flotilla(['ls', 'cli-files', '--json'], env);
  assert.is(ls.code, 0, ls.stderr);
  assert.match(ls.stdout, /hello\.txt/);
  const out = mkdtempSync(join(tmpdir(), 'flotilla-cli-out-'));
  const down = await flotilla(['download', 'cli-files', 'hello.txt', '-o', out], env);
  assert.is(down.code, 0, down.stderr);
  assert.is(readFileSync(join(out, 'hello.txt'), 'utf8'), 'hello from the CLI\n');
  const escape = await flotilla(['download', 'cli-files', '../../etc/passwd', '-o', out], env);
  assert.is(escape.code, 1);
  assert.is((await flotilla(['session', 'rm', 'cli-files'], env)).code, 0);
});

t('an API error exits 1 with one line naming the problem; missing keys exit 2', async ({ env }) => {
  const missing = await flotilla(['session', 'info', 'no-such-session'], env);
  assert.is(missing.code, 1);
  assert.match(missing.stderr, /^flotilla: No such session/m);
  const nokeys = await flotilla(['session', 'ls'], { FLOTILLA_MANAGER_URLS: env.FLOTILLA_MANAGER_URLS, FLOTILLA_ACCESS_KEY: '', FLOTILLA_SECRET_KEY: '' });
  assert.is(nokeys.code, 2);
  assert.match(nokeys.stderr, /FLOTILLA_ACCESS_KEY/);
});

t('folder create, upload, files, download, ls and rm, with --json where they list', async ({ env }) => {
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-cli-folder-'));
  writeFileSync(join(dir, 'notes.txt'), 'kept in a folder\n');
  const created = await flotilla(['folder', 'create', 'cli-data'], env);
  assert.is(created.code, 0, created.stderr);
  const up = await flotilla(['folder', 'upload', 'cli-data', join(dir, 'notes.txt'), '--basedir', dir], env);
  assert.is(up.code, 0, up.stderr);
  const files = await flotilla(['folder', 'files', 'cli-data', '--json'], env);
  assert.is(files.code, 0, files.stderr);
  assert.ok((JSON.parse(files.stdout) as Array<{ filename: string }>).some((f) => f.filename === 'notes.txt'), files.stdout);
  const ls = await flotilla(['folder', 'ls', '--json'], env);
  assert.is(ls.code, 0, ls.stderr);
  assert.ok((JSON.parse(ls.stdout) as Array<{ name: string }>).some((f) => f.name === 'cli-data'));
  const out = mkdtempSync(join(tmpdir(), 'flotilla-cli-folder-out-'));
  const down = await flotilla(['folder', 'download', 'cli-data', 'notes.txt', '-o', out], env);
  assert.is(down.code, 0, down.stderr);
  assert.is(readFileSync(join(out, 'notes.txt'), 'utf8'), 'kept in a folder\n');
  const missing = await flotilla(['folder', 'files', 'no-such-folder'], env);
  assert.is(missing.code, 1);
  // Mounted into a session at /home/work/cli-data.
  const mounted = await flotilla(['session', 'create', 'python', '--name', 'cli-mounted', '--mount', 'cli-data'], env);
  assert.is(mounted.code, 0, mounted.stderr);
  const read = await flotilla(['exec', 'cli-mounted', '-c', 'print(open("/home/work/cli-data/notes.txt").read(), end="")'], env);
  assert.is(read.stdout, 'kept in a folder\n', read.stderr);
  assert.is((await flotilla(['session', 'rm', 'cli-mounted'], env)).code, 0);
  const rm = await flotilla(['folder', 'rm', 'cli-data'], env);
  assert.is(rm.code, 0, rm.stderr);
  // What rm suggests works: restore, rm again, then --purge of the folder already in the trash.
  assert.match(rm.stdout, /flotilla folder rm --purge cli-data, or flotilla folder restore cli-data/);
  const restored = await flotilla(['folder', 'restore', 'cli-data'], env);
  assert.is(restored.code, 0, restored.stderr);
  assert.match((await flotilla(['folder', 'ls'], env)).stdout, /cli-data/);
  assert.is((await flotilla(['folder', 'rm', 'cli-data'], env)).code, 0);
  const purged = await flotilla(['folder', 'rm', 'cli-data', '--purge'], env);
  assert.is(purged.code, 0, purged.stderr);
  assert.is((await flotilla(['folder', 'create', 'cli-data'], env)).code, 0, 'the name is free again');
  assert.is((await flotilla(['folder', 'rm', 'cli-data', '--purge'], env)).code, 0);
});

t('usage mistakes exit 2 with a message: no code to run, a bad --timeout, an unknown command', async ({ env }) => {
  for (const args of [['exec', 'some-session'], ['run', 'python'], ['exec', 'some-session', '-c', '1', '--timeout', 'soon'], ['no-such-command']]) {
    const r = await flotilla(args, env);
    assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.ok(r.stderr.trim(), `${args.join(' ')} says why`);
  }
});

t('Ctrl-C in run --rm interrupts the code in the session and still removes the session', async ({ c, env }) => {
  const child = spawn(process.execPath, [BIN, 'run', 'python', '--name', 'cli-ctrl-c', '--rm', '-c', 'import time\nfor i in range(600):\n    print(i, flush=True)\n    time.sleep(0.1)'],
    { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? -1)));
  await eventually(() => /^3$/m.test(out), 60_000, 'the loop printing');
  child.kill('SIGINT');
  const code = await exited;
  assert.is(code, 130, err);
  assert.match(err, /KeyboardInterrupt/);
  const info = await c.client.sessions.get('cli-ctrl-c');
  assert.ok(['TERMINATING', 'TERMINATED'].includes(info.status), info.status);
  assert.ok(Number(out.trim().split('\n').pop()) < 600, 'the loop did not run to its end');
});

t('admin keypair and policy commands: create prints the secret once, ls --json lists, deactivate refuses the key, rm removes it', async ({ env }) => {
  const pol = await flotilla(['admin', 'policy', 'create', 'cli-policy', '--max-sessions', '3', '--slots', 'cpu=4,mem=8g'], env);
  assert.is(pol.code, 0, pol.stderr);
  const made = await flotilla(['admin', 'keypair', 'create', 'cli-user@example.com', '--policy', 'cli-policy', '--json'], env);
  assert.is(made.code, 0, made.stderr);
  const kp = JSON.parse(made.stdout) as { access_key: string; secret_key: string; resource_policy: string };
  assert.is(kp.resource_policy, 'cli-policy');
  const user = { ...env, FLOTILLA_ACCESS_KEY: kp.access_key, FLOTILLA_SECRET_KEY: kp.secret_key };
  assert.is((await flotilla(['session', 'ls', '--json'], user)).code, 0);
  const list = await flotilla(['admin', 'keypair', 'ls', '--json'], env);
  const listed = (JSON.parse(list.stdout) as Array<Record<string, unknown>>).find((k) => k.access_key === kp.access_key)!;
  assert.ok(listed && !('secret_key' in listed), 'listed without its secret');
  assert.is((await flotilla(['admin', 'keypair', 'ls'], user)).code, 1, 'a user is not an admin');
  assert.is((await flotilla(['admin', 'keypair', 'deactivate', kp.access_key], env)).code, 0);
  const refused = await flotilla(['session', 'ls'], user);
  assert.is(refused.code, 1);
  assert.match(refused.stderr, /inactive/);
  assert.is((await flotilla(['admin', 'keypair', 'rm', kp.access_key], env)).code, 0);
  const jobs = await flotilla(['admin', 'jobs', '--json'], env);
  assert.ok((JSON.parse(jobs.stdout) as Array<{ name: string }>).some((j) => j.name === 'idle-sessions'));
});

t('admin group commands: create with scheduler options, set one live, ls shows them, a bad value is refused, rm removes it', async ({ env }) => {
  const made = await flotilla(['admin', 'group', 'create', 'cli-group', '--scheduler', 'drf', '--pending-timeout', '60'], env);
  assert.is(made.code, 0, made.stderr);
  assert.is((JSON.parse(made.stdout) as { scheduler: string }).scheduler, 'drf');
  const set = await flotilla(['admin', 'group', 'set', 'cli-group', '--selector', 'concentrated', '--retries-to-skip', '2'], env);
  assert.is(set.code, 0, set.stderr);
  const ls = await flotilla(['admin', 'group', 'ls', '--json'], env);
  const g = (JSON.parse(ls.stdout) as Array<Record<string, unknown>>).find((x) => x.name === 'cli-group');
  assert.equal({ scheduler: g?.scheduler, agent_selector: g?.agent_selector, pending_timeout: g?.pending_timeout, num_retries_to_skip: g?.num_retries_to_skip },
    { scheduler: 'drf', agent_selector: 'concentrated', pending_timeout: 60, num_retries_to_skip: 2 });
  const table = await flotilla(['admin', 'group', 'ls'], env);
  assert.match(table.stdout, /cli-group\s+yes\s+drf\s+concentrated\s+60\s+2/);
  const bad = await flotilla(['admin', 'group', 'set', 'cli-group', '--scheduler', 'random'], env);
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /scheduler/);
  assert.is((await flotilla(['admin', 'group', 'rm', 'cli-group'], env)).code, 0);
  assert.not.ok((await flotilla(['admin', 'group', 'ls'], env)).stdout.includes('cli-group'));
});

t.run();
