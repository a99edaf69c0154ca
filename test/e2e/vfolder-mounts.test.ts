// Virtual folders mounted into real containers: a session reads what was uploaded through the
// API and writes a file the API then lists; mount_map places a folder elsewhere under
// /home/work; a folder shared read-only is mounted read-only (writes fail inside the container);
// a folder the caller may not use is refused at create time, creating nothing.
import * as assert from 'uvu/assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLUSTER_CONFIG_PREFIX } from '../../config/cluster.ts';
import { Client, NotFound, type ExecuteResult } from '../../runtime/sdk/index.ts';
import { startInProcess, type InProcessCluster } from '../helpers/in-process.ts';
import { eventually, suite } from '../helpers/suite.ts';

type Ctx = InProcessCluster & { root: string; a: Client; b: Client; bEmail: string };
const t = suite<Ctx>('virtual folder mounts', { timeoutMs: 120_000 });

t.before(async (ctx) => {
  Object.assign(ctx, await startInProcess('mounts'));
  ctx.root = await mkdtemp(join(tmpdir(), 'flotilla-mounts-'));
  await ctx.stores.config.put(`${CLUSTER_CONFIG_PREFIX}vfolder.root`, ctx.root);
  await eventually(() => ctx.m.config.get('vfolder.root') === ctx.root, 10_000, 'vfolder.root applied');
  const ka = await ctx.client.admin.createKeypair({ email: `a-${ctx.tag}@example.com` });
  ctx.bEmail = `b-${ctx.tag}@example.com`;
  const kb = await ctx.client.admin.createKeypair({ email: ctx.bEmail });
  ctx.a = new Client({ endpoint: ctx.m.url, accessKey: ka.access_key, secretKey: ka.secret_key });
  ctx.b = new Client({ endpoint: ctx.m.url, accessKey: kb.access_key, secretKey: kb.secret_key });
});
t.after(async (ctx) => {
  await ctx.stop?.();
  if (ctx.root) await rm(ctx.root, { recursive: true, force: true });
});

async function run(c: Client, session: string, code: string): Promise<{ r: ExecuteResult; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const r = await c.sessions.run(session, code, { onOutput: (s, d) => { if (s === 'stdout') stdout += d; else stderr += d; } });
  return { r, stdout, stderr };
}

t('a session reads what the API uploaded and writes a file the API then lists; mount_map moves a folder', async ({ a }) => {
  await a.folders.create('data1');
  await a.folders.create('other');
  await a.folders.upload('data1', 'hello.txt', Buffer.from('from the API\n'));
  const s = await a.sessions.create({ name: 'mounts-1', image: 'python', resources: { cpu: '0.5', mem: '256m' }, mounts: ['data1', 'other'], mountMap: { other: '/home/work/deep/place' } });
  assert.is(s.status, 'RUNNING');
  const read = await run(a, s.sessionId, "print(open('/home/work/data1/hello.txt').read(), end='')");
  assert.is(read.stdout, 'from the API\n');
  const write = await run(a, s.sessionId, [
    "open('/home/work/data1/made-in-kernel.txt', 'w').write('written inside\\n')",
    "open('/home/work/deep/place/mapped.txt', 'w').write('mapped\\n')",
    "import os; print(sorted(os.listdir('/home/work/data1')))",
  ].join('\n'));
  assert.is(write.r.exitCode, 0, write.stderr);
  assert.match(write.stdout, /made-in-kernel\.txt/);
  const files = (await a.folders.listFiles('data1')).map((f) => f.filename);
  assert.ok(files.includes('made-in-kernel.txt'), `listed: ${files.join(', ')}`);
  assert.ok((await a.folders.listFiles('other')).some((f) => f.filename === 'mapped.txt'), 'the mapped folder got the file');
  const body = await a.folders.download('data1', 'made-in-kernel.txt');
  let text = '';
  for await (const chunk of body) text += chunk;
  assert.is(text, 'written inside\n');
  await a.sessions.destroy(s.sessionId);
});

t('a folder shared read-only is mounted read-only: reads work, writes fail inside the container', async ({ a, b, bEmail }) => {
  await a.folders.create('shared-ro');
  await a.folders.upload('shared-ro', 'readme.txt', Buffer.from('read me\n'));
  await a.folders.share('shared-ro', [bEmail], 'ro');
  const s = await b.sessions.create({ name: 'mounts-ro', image: 'python', resources: { cpu: '0.5', mem: '256m' }, mounts: ['shared-ro'] });
  assert.is(s.status, 'RUNNING');
  assert.is((await run(b, s.sessionId, "print(open('/home/work/shared-ro/readme.txt').read(), end='')")).stdout, 'read me\n');
  const w = await run(b, s.sessionId, "open('/home/work/shared-ro/nope.txt', 'w').write('x')");
  assert.is(w.r.exitCode, 1);
  assert.match(w.stderr, /Read-only file system/);
  assert.not.ok((await a.folders.listFiles('shared-ro')).some((f) => f.filename === 'nope.txt'));
  await b.sessions.destroy(s.sessionId);
});

t('a folder the caller may not use, or an unknown one, is refused and creates no session', async ({ a, b }) => {
  await a.folders.create('private-a');
  const before = (await b.sessions.list()).total;
  try {
    await b.sessions.create({ name: 'mounts-no', image: 'python', mounts: ['private-a'] });
    assert.unreachable('mounting another tenant\'s folder must fail');
  } catch (e) { assert.instance(e, NotFound); }
  try {
    await a.sessions.create({ name: 'mounts-no2', image: 'python', mounts: ['no-such-folder'] });
    assert.unreachable('mounting an unknown folder must fail');
  } catch (e) { assert.instance(e, NotFound); }
  assert.is((await b.sessions.list()).total, before);
});

t.run();
