// Virtual folders (issue 9) on an in-process manager over the real PostgreSQL, Redis and etcd
// and the real file system (vfolder.root: a temporary directory of this suite): folder CRUD and
// the trash, files, sharing and tenancy (another tenant's folder is 404), max_vfolder_count,
// the size quota, a 200 MB tus upload cut half way and resumed, downloaded back with the same
// SHA-256 without the process's memory growing by the file's size, and every path escape
// (traversal, absolute paths, symbolic links leading out) refused with nothing made outside.
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { CLUSTER_CONFIG_PREFIX, encodeClusterValue } from '../../config/cluster.ts';
import { Client, FlotillaError } from '../../runtime/sdk/index.ts';
import { startInProcess, type InProcessCluster } from '../helpers/in-process.ts';
import { eventually, suite } from '../helpers/suite.ts';

const MB = 1024 * 1024;
const BIG = 200 * MB;

type Ctx = InProcessCluster & { root: string; work: string; outside: string; b: Client; bKey: string; bEmail: string; big: string; bigSha: string };
const t = suite<Ctx>('virtual folders', { timeoutMs: 240_000 });

/** The API's answer to fn, as [status, code, msg]. */
async function refusal(fn: () => Promise<unknown>): Promise<{ status: number; code: string; msg: string }> {
  try { await fn(); } catch (e) {
    assert.instance(e, FlotillaError);
    const f = e as FlotillaError;
    return { status: f.status, code: f.code, msg: f.message };
  }
  assert.unreachable('expected a refusal, the call succeeded');
  throw new Error('unreachable');
}

async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, pre: string) => {
    for (const e of (await readdir(d, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      out.push(pre + e.name + (e.isDirectory() ? '/' : ''));
      if (e.isDirectory()) await walk(join(d, e.name), `${pre}${e.name}/`);
    }
  };
  await walk(dir, '');
  return out;
}

t.before(async (ctx) => {
  Object.assign(ctx, await startInProcess('vfolders'));
  ctx.work = await mkdtemp(join(tmpdir(), 'flotilla-vf-test-'));
  ctx.root = join(ctx.work, 'root');
  ctx.outside = join(ctx.work, 'outside');
  await mkdir(ctx.root);
  await mkdir(ctx.outside);
  await writeFile(join(ctx.outside, 'secret.txt'), 'outside the folder\n');
  await ctx.stores.config.put(`${CLUSTER_CONFIG_PREFIX}vfolder.root`, ctx.root);
  await eventually(() => ctx.m.config.get('vfolder.root') === ctx.root, 10_000, 'vfolder.root applied');
  ctx.bEmail = `b-${ctx.tag}@example.com`;
  const b = await ctx.m.keypairs.create({ email: ctx.bEmail });
  ctx.bKey = b.accessKey;
  ctx.b = new Client({ endpoint: ctx.m.url, accessKey: b.accessKey, secretKey: b.secretKey });
});

t.after(async (ctx) => {
  await ctx.stop();
  await rm(ctx.work, { recursive: true, force: true });
});

t('create, list, info, rename; the data lives at <root>/<scope>/<id[0:2]>/<id[2:4]>/<id>; names are validated', async (ctx) => {
  const f = await ctx.client.folders.create('alpha', { quota: '1g' });
  assert.is(f.name, 'alpha');
  assert.is(f.permission, 'rw');
  assert.is(f.is_owner, true);
  assert.is(f.quota, 1024 ** 3);
  const mounts = await ctx.m.vfolders.resolveMounts(ctx.ak, ['alpha'], {});
  assert.ok(mounts[0].hostPath.startsWith(ctx.root + '/user-'), mounts[0].hostPath);
  assert.ok(mounts[0].hostPath.endsWith(`/${f.id.slice(0, 2)}/${f.id.slice(2, 4)}/${f.id}`), mounts[0].hostPath);
  assert.ok((await lstat(mounts[0].hostPath)).isDirectory());

  assert.equal((await ctx.client.folders.list()).map((x) => x.name), ['alpha']);
  const renamed = await ctx.client.folders.rename('alpha', 'alpha2');
  assert.is(renamed.id, f.id);
  assert.is((await ctx.client.folders.info('alpha2')).id, f.id);
  assert.is((await ctx.client.folders.info(f.id)).name, 'alpha2', 'a folder is found by its id too');
  assert.ok(existsSync(mounts[0].hostPath), 'a rename moves no data');
  await ctx.client.folders.rename('alpha2', 'alpha');

  for (const bad of ['', '..', 'a/b', 'x'.repeat(65), 'sp ace', '../etc']) {
    const r = await refusal(() => ctx.client.folders.create(bad));
    assert.is(r.status, 400, `name ${JSON.stringify(bad)}`);
  }
  assert.is((await refusal(() => ctx.client.folders.create('alpha'))).status, 409);
});

t('files: mkdir, upload, list, rename-file, delete-files, download', async (ctx) => {
  const fs = ctx.client.folders;
  await fs.mkdir('alpha', 'a/b/c', { parents: true });
  assert.is((await refusal(() => fs.mkdir('alpha', 'x/y'))).status, 404, 'no parents without parents: true');
  assert.is((await refusal(() => fs.mkdir('alpha', 'a/b'))).status, 409);
  await fs.mkdir('alpha', 'a/b', { existOk: true });
  await fs.upload('alpha', 'a/hello.txt', Buffer.from('hello\n'));
  await fs.upload('alpha', 'new/dir/made.txt', Buffer.from('parents made\n'));
  await fs.upload('alpha', 'empty.txt', Buffer.alloc(0));
  const top = await fs.listFiles('alpha');
  assert.equal(top.map((e) => e.filename), ['a', 'empty.txt', 'new']);
  assert.is(top[0].mode[0], 'd');
  const inA = await fs.listFiles('alpha', 'a');
  assert.equal(inA.map((e) => [e.filename, e.size]), [['b', inA[0].size], ['hello.txt', 6]]);
  await fs.renameFile('alpha', 'a/hello.txt', 'hi.txt');
  assert.is((await refusal(() => fs.renameFile('alpha', 'a/nope.txt', 'x'))).status, 404);
  const res = await fs.download('alpha', 'a/hi.txt');
  let text = '';
  for await (const c of res) text += c;
  assert.is(text, 'hello\n');
  const ranged = await fs.download('alpha', 'a/hi.txt', { offset: 3 });
  assert.is(ranged.statusCode, 206);
  let rest = '';
  for await (const c of ranged) rest += c;
  assert.is(rest, 'lo\n');
  assert.is((await refusal(() => fs.requestDownload('alpha', 'a'))).status, 400, 'a directory is not downloaded');
  assert.is((await refusal(() => fs.deleteFiles('alpha', ['a']))).status, 409, 'a non-empty directory needs recursive');
  await fs.deleteFiles('alpha', ['a', 'empty.txt'], { recursive: true });
  assert.equal((await fs.listFiles('alpha')).map((e) => e.filename), ['new']);
});

t('tenant B gets 404 for A\'s folder exactly as for a missing one; sharing ro then rw; unshare', async (ctx) => {
  const missing = await refusal(() => ctx.b.folders.info('no-such-folder'));
  const alpha = (await ctx.client.folders.info('alpha'));
  for (const call of [
    () => ctx.b.folders.info('alpha'), () => ctx.b.folders.info(alpha.id), () => ctx.b.folders.listFiles('alpha'),
    () => ctx.b.folders.requestUpload('alpha', 'x', 1), () => ctx.b.folders.requestDownload('alpha', 'new/dir/made.txt'),
    () => ctx.b.folders.delete('alpha'), () => ctx.b.folders.rename('alpha', 'mine'), () => ctx.b.folders.share('alpha', [ctx.bKey]),
    () => ctx.b.folders.mkdir('alpha', 'x'), () => ctx.b.folders.deleteFiles('alpha', ['new'], { recursive: true }),
  ]) {
    const r = await refusal(call);
    assert.equal({ status: r.status, code: r.code }, { status: missing.status, code: missing.code });
    assert.is(r.status, 404);
  }
  assert.equal(await ctx.b.folders.list(), []);
  assert.ok(existsSync(join(ctx.m.vfolders.hostPath({ id: alpha.id, quota_scope: (await ctx.m.vfolders.resolve(ctx.ak, 'alpha')).row.quota_scope }), 'new')), 'nothing of A\'s was deleted');

  assert.equal(await ctx.client.folders.share('alpha', [ctx.bEmail], 'ro'), [ctx.bEmail]);
  const seen = await ctx.b.folders.list();
  assert.equal(seen.map((f) => [f.name, f.permission, f.is_owner]), [['alpha', 'ro', false]]);
  assert.equal((await ctx.b.folders.listFiles('alpha')).map((e) => e.filename), ['new']);
  assert.is((await refusal(() => ctx.b.folders.upload('alpha', 'b.txt', Buffer.from('b')))).status, 403, 'ro: no writes');
  assert.is((await refusal(() => ctx.b.folders.delete('alpha'))).status, 403, 'only the owner deletes');
  const ro = await ctx.m.vfolders.resolveMounts(ctx.bKey, ['alpha'], {});
  assert.is(ro[0].readOnly, true);
  await ctx.client.folders.share('alpha', [ctx.bEmail], 'rw');
  await ctx.b.folders.upload('alpha', 'from-b.txt', Buffer.from('b wrote this\n'));
  assert.is((await ctx.m.vfolders.resolveMounts(ctx.bKey, ['alpha'], {}))[0].readOnly, false);
  await ctx.client.folders.unshare('alpha', [ctx.bEmail]);
  assert.is((await refusal(() => ctx.b.folders.info('alpha'))).status, 404);
  assert.is((await refusal(() => ctx.client.folders.share('alpha', ['nobody@example.com']))).status, 404);
});

t('resolveMounts: /home/work/<name> or the mapped path (absolute, below /home/work), read-only for ro; unknown → 404 naming it', async (ctx) => {
  const [m] = await ctx.m.vfolders.resolveMounts(ctx.ak, ['alpha'], { alpha: '/home/work/data/in' });
  assert.is(m.containerPath, '/home/work/data/in');
  assert.is(m.name, 'alpha');
  assert.is(m.readOnly, false);
  assert.is((await ctx.m.vfolders.resolveMounts(ctx.ak, ['alpha'], {}))[0].containerPath, '/home/work/alpha');
  for (const bad of ['relative', '/etc', '/home/work', '/home/work/../etc', '/home/workx']) {
    assert.is((await refusal(() => ctx.m.vfolders.resolveMounts(ctx.ak, ['alpha'], { alpha: bad }))).status, 400, bad);
  }
  const unknown = await refusal(() => ctx.m.vfolders.resolveMounts(ctx.ak, ['nope'], {}));
  assert.is(unknown.status, 404);
  assert.match(unknown.msg, 'nope');
  assert.is((await refusal(() => ctx.m.vfolders.resolveMounts(ctx.bKey, ['alpha'], {}))).status, 404, 'not shared any more');
});

t('traversal and symbolic links leading out are refused in uploads, mkdir, rename, listings, deletes and downloads; nothing is made outside', async (ctx) => {
  const fs = ctx.client.folders;
  const host = (await ctx.m.vfolders.resolveMounts(ctx.ak, ['alpha'], {}))[0].hostPath;
  // What code in a session with the folder mounted could do: links out of it.
  await symlink(ctx.outside, join(host, 'out'));
  await symlink(join(ctx.outside, 'secret.txt'), join(host, 'secret-link'));
  await symlink('../../../../../../..', join(host, 'up'));
  const before = await tree(ctx.work);
  const rootBefore = await tree(ctx.root);

  const attempts: Array<[string, () => Promise<unknown>]> = [
    ['upload ../', () => fs.requestUpload('alpha', '../evil.txt', 4)],
    ['upload ../../', () => fs.requestUpload('alpha', 'new/../../evil.txt', 4)],
    ['upload absolute', () => fs.requestUpload('alpha', '/tmp/evil.txt', 4)],
    ['upload through a link', () => fs.upload('alpha', 'out/evil.txt', Buffer.from('evil'))],
    ['upload through a relative link', () => fs.upload('alpha', 'up/tmp/evil.txt', Buffer.from('evil'))],
    ['upload NUL', () => fs.requestUpload('alpha', 'a\0b', 4)],
    ['mkdir ../', () => fs.mkdir('alpha', '../evil-dir')],
    ['mkdir absolute', () => fs.mkdir('alpha', '/tmp/evil-dir', { parents: true })],
    ['mkdir through a link', () => fs.mkdir('alpha', 'out/evil-dir')],
    ['mkdir -p through a link', () => fs.mkdir('alpha', 'out/x/y', { parents: true })],
    ['rename ../ target', () => fs.renameFile('alpha', '../outside', 'x')],
    ['rename to ../', () => fs.renameFile('alpha', 'from-b.txt', '../moved.txt')],
    ['rename to a path', () => fs.renameFile('alpha', 'from-b.txt', 'out/moved.txt')],
    ['rename through a link', () => fs.renameFile('alpha', 'out/secret.txt', 'stolen.txt')],
    ['download ../', () => fs.requestDownload('alpha', '../outside/secret.txt')],
    ['download through a link dir', () => fs.requestDownload('alpha', 'out/secret.txt')],
    ['download a link', () => fs.requestDownload('alpha', 'secret-link')],
    ['list through a link', () => fs.listFiles('alpha', 'out')],
    ['list ../', () => fs.listFiles('alpha', '..')],
    ['delete through a link', () => fs.deleteFiles('alpha', ['out/secret.txt'])],
    ['delete ../', () => fs.deleteFiles('alpha', ['../outside'], { recursive: true })],
  ];
  for (const [what, call] of attempts) {
    const r = await refusal(call);
    assert.ok(r.status === 400 || r.status === 403, `${what}: ${r.status} ${r.code} ${r.msg}`);
  }
  assert.equal(await tree(ctx.work), before, 'nothing was made or removed outside the folder');
  assert.equal(await tree(ctx.root), rootBefore, 'nothing was made in the folder either');
  assert.is(await readFile(join(ctx.outside, 'secret.txt'), 'utf8'), 'outside the folder\n');

  // A link inside is listed as a link, and deleting it removes the link, not its target.
  const listed = await fs.listFiles('alpha');
  assert.is(listed.find((e) => e.filename === 'out')?.mode[0], 'l');
  await fs.deleteFiles('alpha', ['out', 'secret-link', 'up'], { recursive: true });
  assert.ok(existsSync(join(ctx.outside, 'secret.txt')));

  // A link swapped in for a directory after an upload was granted: the upload's end refuses it.
  await fs.mkdir('alpha', 'later');
  const ticket = await fs.requestUpload('alpha', 'later/late.txt', 4);
  await rm(join(host, 'later'), { recursive: true });
  await symlink(ctx.outside, join(host, 'later'));
  const r = await refusal(() => fs.uploadTo(ticket, Buffer.from('evil')));
  assert.is(r.status, 403, r.msg);
  assert.ok(!existsSync(join(ctx.outside, 'late.txt')), 'nothing written through the swapped link');
  await rm(join(host, 'later'));
});

t('max_vfolder_count from the owner\'s resource policy: 412 naming the limit', async (ctx) => {
  const c = await ctx.m.keypairs.create({ email: `c-${ctx.tag}@example.com` });
  await ctx.stores.db.query(`INSERT INTO resource_policies (name, max_vfolder_count) VALUES ($1, 2)`, [`two-${ctx.tag}`]);
  await ctx.stores.db.query(`UPDATE keypairs SET resource_policy = $2 WHERE access_key = $1`, [c.accessKey, `two-${ctx.tag}`]);
  const cc = new Client({ endpoint: ctx.m.url, accessKey: c.accessKey, secretKey: c.secretKey });
  await cc.folders.create('one');
  await cc.folders.create('two');
  const r = await refusal(() => cc.folders.create('three'));
  assert.is(r.status, 412);
  assert.is(r.code, 'quota-exceeded');
  assert.match(r.msg, 'max_vfolder_count');
  assert.match(r.msg, `two-${ctx.tag}`);
  // The trash counts until purged.
  await cc.folders.delete('two');
  assert.is((await refusal(() => cc.folders.create('three'))).status, 412);
  assert.equal((await cc.folders.list({ trash: true })).map((f) => f.name), ['two']);
  await cc.folders.restore('two');
  await cc.folders.delete('two');
  const host = (await ctx.m.vfolders.resolve(c.accessKey, 'two', { status: 'delete-pending' }));
  const dir = ctx.m.vfolders.hostPath(host.row);
  assert.ok(existsSync(dir), 'the trash keeps the data');
  await cc.folders.purge('two');
  assert.ok(!existsSync(dir), 'purge deletes it');
  await cc.folders.create('three');
  // Admins act for an owner with owner_access_key (and the owner's policy applies).
  const r2 = await refusal(() => ctx.client.folders.create('four', { ownerAccessKey: c.accessKey }));
  assert.match(r2.msg, 'max_vfolder_count');
});

t('the size quota of a folder is checked when an upload is asked for and as it is written', async (ctx) => {
  const fs = ctx.client.folders;
  await fs.create('small', { quota: 1024 * 1024 });
  const big = await refusal(() => fs.requestUpload('small', 'too-big.bin', 2 * 1024 * 1024));
  assert.is(big.status, 412);
  assert.match(big.msg, 'quota');
  const ticket = await fs.requestUpload('small', 'half.bin', 600 * 1024);
  // The pending upload reserves its size.
  assert.is((await refusal(() => fs.requestUpload('small', 'other.bin', 600 * 1024))).status, 412);
  // More bytes than the upload's length: refused, nothing past it written.
  const tooLong = await refusal(() => fs.uploadTo(ticket, randomBytes(700 * 1024)));
  assert.is(tooLong.status, 413, tooLong.msg);
  await fs.uploadTo(ticket, randomBytes(600 * 1024));
  assert.is((await fs.info('small')).used_bytes, 600 * 1024);
  // Asked for at once, uploads that fit only one by one: exactly one reserves the room.
  await fs.create('raced', { quota: 1000 });
  const asked = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => fs.requestUpload('raced', `r${i}.bin`, 600)));
  assert.is(asked.filter((r) => r.status === 'fulfilled').length, 1, JSON.stringify(asked.map((r) => r.status)));
  assert.ok(asked.every((r) => r.status === 'fulfilled' || (r.reason as FlotillaError).status === 412));
});

// The manager and the client run in this process, so its RSS covers both. V8 collects the
// garbage of passing bytes only once tens of MB have piled up, whatever the file's size; the
// growth must stay far below the file's size (measured here: 14 MB up, 43 MB down for 200 MB).
v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
async function peakRssGrowth(fn: () => Promise<void>): Promise<number> {
  gc();
  await new Promise((r) => setTimeout(r, 50));
  const base = process.memoryUsage().rss;
  let peak = base;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) { peak = Math.max(peak, process.memoryUsage().rss); await new Promise((r) => setTimeout(r, 10)); }
  })();
  try { await fn(); } finally { sampling = false; await sampler; }
  return Math.max(peak, process.memoryUsage().rss) - base;
}
const mb = (n: number) => `${(n / MB).toFixed(1)} MB`;

t('a 200 MB upload streams, is cut half way and resumed, and downloads back with the same SHA-256, memory flat', async (ctx) => {
  ctx.big = join(ctx.work, 'big.bin');
  const hash = createHash('sha256');
  const out = createWriteStream(ctx.big);
  for (let i = 0; i < BIG / MB; i++) {
    const chunk = randomBytes(MB);
    hash.update(chunk);
    if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  await new Promise<void>((r) => out.end(() => r()));
  ctx.bigSha = hash.digest('hex');
  await ctx.client.folders.create('bigdata');
  const ticket = await ctx.client.folders.requestUpload('bigdata', 'nested/big.bin', BIG);

  let cutAt = 0;
  const upGrowth = await peakRssGrowth(async () => {
    // First attempt: a raw tus PATCH of the whole file whose connection is destroyed half way.
    await new Promise<void>((resolve) => {
      const url = new URL(ticket.url);
      url.searchParams.set('token', ticket.token);
      const req = request(url, { method: 'PATCH', headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream', 'Content-Length': String(BIG) } });
      req.on('error', () => resolve());
      req.on('response', (res) => { res.resume(); resolve(); });
      const src = createReadStream(ctx.big, { highWaterMark: MB });
      let sent = 0;
      src.on('data', (c) => {
        sent += c.length;
        if (sent >= BIG / 2) { src.destroy(); req.destroy(); return; }
        if (!req.write(c)) { src.pause(); req.once('drain', () => src.resume()); }
      });
    });
    cutAt = await eventually(async () => {
      const a = await ctx.client.folders.uploadOffset(ticket);
      const b = await ctx.client.folders.uploadOffset(ticket);
      return a === b && a > 0 ? a : undefined;
    }, 10_000, 'the offset settles');
    assert.ok(cutAt > 0 && cutAt < BIG, `the server kept part of the upload (${cutAt})`);
    assert.ok(!existsSync(join(ctx.m.vfolders.hostPath((await ctx.m.vfolders.resolve(ctx.ak, 'bigdata')).row), 'nested')), 'nothing is in the folder before the upload is complete');
    // The SDK resumes from the server's offset.
    const progress: number[] = [];
    await ctx.client.folders.uploadTo(ticket, ctx.big, { onProgress: (o) => progress.push(o) });
    assert.is(progress.at(-1), BIG);
  });
  console.log(`    upload of ${mb(BIG)} (cut at ${mb(cutAt)}, resumed): peak RSS growth ${mb(upGrowth)}`);
  assert.ok(upGrowth < 80 * MB, `upload grew RSS by ${mb(upGrowth)}`);

  const files = await ctx.client.folders.listFiles('bigdata', 'nested');
  assert.equal(files.map((f) => [f.filename, f.size]), [['big.bin', BIG]]);

  let sha = '';
  const downGrowth = await peakRssGrowth(async () => {
    const res = await ctx.client.folders.download('bigdata', 'nested/big.bin');
    assert.is(Number(res.headers['content-length']), BIG);
    const h = createHash('sha256');
    await pipeline(res, async function* (src) { for await (const c of src) h.update(c as Buffer); });
    sha = h.digest('hex');
  });
  console.log(`    download of ${mb(BIG)}: peak RSS growth ${mb(downGrowth)}`);
  assert.is(sha, ctx.bigSha);
  assert.ok(downGrowth < 80 * MB, `download grew RSS by ${mb(downGrowth)}`);
  const { rows } = await ctx.stores.db.query<{ id: string; completed_at: Date | null }>(`SELECT id, completed_at FROM vfolder_transfers WHERE path = 'nested/big.bin'`);
  assert.ok(rows[0].completed_at, 'the upload is recorded complete');
  assert.not.ok(existsSync(join(ctx.root, '.tus', rows[0].id)), 'its part file was moved into the folder');
});

t('tus protocol answers: version, content type, offset mismatch, unknown token', async (ctx) => {
  const ticket = await ctx.client.folders.requestUpload('bigdata', 'proto.bin', 10);
  const send = (headers: Record<string, string>, body = '', token = ticket.token) => new Promise<{ status: number; headers: Record<string, unknown> }>((resolve, reject) => {
    const url = new URL(ticket.url);
    url.searchParams.set('token', token);
    const req = request(url, { method: headers.method ?? 'PATCH', headers: { ...headers, 'Content-Length': String(Buffer.byteLength(body)) } }, (res) => { res.resume(); res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers })); });
    req.on('error', reject);
    req.end(body);
  });
  const ct = 'application/offset+octet-stream';
  assert.is((await send({ 'Content-Type': ct, 'Upload-Offset': '0' }, 'abc')).status, 412, 'no Tus-Resumable');
  assert.is((await send({ 'Tus-Resumable': '1.0.0', 'Content-Type': ct, 'Upload-Offset': '5' }, 'abc')).status, 409, 'wrong offset');
  assert.is((await send({ 'Tus-Resumable': '1.0.0', 'Content-Type': ct, 'Upload-Offset': '0' }, 'abc', 'bogus')).status, 404, 'unknown token');
  const ok = await send({ 'Tus-Resumable': '1.0.0', 'Content-Type': ct, 'Upload-Offset': '0' }, 'abc');
  assert.is(ok.status, 204);
  assert.is(ok.headers['upload-offset'], '3');
  assert.is(ok.headers['tus-resumable'], '1.0.0');
  const head = await send({ method: 'HEAD', 'Tus-Resumable': '1.0.0' });
  assert.is(head.status, 200);
  assert.is(head.headers['upload-offset'], '3');
  assert.is(head.headers['upload-length'], '10');
});

// Guards the sweep of abandoned uploads: expired ones were dropped only when another transfer was
// asked for, so their part files took disk space for as long as nobody transferred anything.
t('an upload left unfinished past vfolder.upload_expiry is dropped by the vfolder-transfer-sweep job: its part file goes, its token answers 404', async (ctx) => {
  await ctx.stores.config.put(`${CLUSTER_CONFIG_PREFIX}vfolder.upload_expiry`, encodeClusterValue(500));
  await eventually(() => ctx.m.config.get('vfolder.upload_expiry') === 500, 10_000, 'upload_expiry applied');
  try {
    const ticket = await ctx.client.folders.requestUpload('bigdata', 'abandoned.bin', 10);
    const url = new URL(ticket.url);
    url.searchParams.set('token', ticket.token);
    const patch = (method: string, body = '') => new Promise<number>((resolve, reject) => {
      const req = request(url, { method, headers: { 'Tus-Resumable': '1.0.0', 'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': '0', 'Content-Length': String(body.length) } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)); });
      req.on('error', reject);
      req.end(body);
    });
    assert.is(await patch('PATCH', 'abc'), 204);
    const part = join(ctx.root, '.tus', (await ctx.stores.db.query<{ id: string }>(`SELECT id FROM vfolder_transfers WHERE path = 'abandoned.bin'`)).rows[0].id);
    assert.ok(existsSync(part), 'the part file holds what was sent');
    await new Promise((r) => setTimeout(r, 700));
    const run = await ctx.client.admin.runJob('vfolder-transfer-sweep');
    assert.ok(((run.result as { dropped?: number } | undefined)?.dropped ?? 0) >= 1, `the job dropped it: ${JSON.stringify(run)}`);
    assert.not.ok(existsSync(part), 'its part file is gone');
    assert.is(await patch('HEAD'), 404, 'its token is gone');
  } finally {
    await ctx.stores.config.put(`${CLUSTER_CONFIG_PREFIX}vfolder.upload_expiry`, encodeClusterValue(24 * 3600_000));
  }
});

t('sharing by email reaches one user: a keypair made with the email in other case joins that user, and two users differing only in case are told apart by the exact spelling', async (ctx) => {
  await ctx.client.folders.create('case-shared');
  // Made with the email upper-cased: the same user as b, not a second one.
  const again = await ctx.m.keypairs.create({ email: ctx.bEmail.toUpperCase() });
  assert.is(again.userId, (await ctx.stores.db.query<{ user_id: string }>(`SELECT user_id FROM keypairs WHERE access_key = $1`, [ctx.bKey])).rows[0].user_id);
  // Two users whose emails differ only in case (rows from before this rule): only the exact one is shared with.
  const lower = `case-${ctx.tag}@example.com`;
  const upper = lower.toUpperCase();
  const keyOf = async (email: string) => {
    const userId = (await ctx.stores.db.query<{ id: string }>(`INSERT INTO users (id, email) VALUES (gen_random_uuid(), $1) RETURNING id`, [email])).rows[0].id;
    const kp = await ctx.m.keypairs.create({ email: `${email}.tmp` });
    await ctx.stores.db.query(`UPDATE keypairs SET user_id = $1 WHERE access_key = $2`, [userId, kp.accessKey]);
    ctx.m.keypairs.invalidate(kp.accessKey);
    return kp;
  };
  const lo = await keyOf(lower);
  const up = await keyOf(upper);
  await ctx.client.folders.share('case-shared', [lower], 'rw');
  const loClient = new Client({ endpoint: ctx.m.url, accessKey: lo.accessKey, secretKey: lo.secretKey });
  const upClient = new Client({ endpoint: ctx.m.url, accessKey: up.accessKey, secretKey: up.secretKey });
  assert.equal((await loClient.folders.list()).map((f) => f.name), ['case-shared']);
  assert.equal(await upClient.folders.list(), [], 'the other spelling\'s user got nothing');
  assert.is((await refusal(() => ctx.client.folders.share('case-shared', [lower.replace('case', 'CASE')], 'ro'))).status, 400, 'ambiguous: neither spelling exactly');
  await ctx.client.folders.delete('case-shared');
  await ctx.client.folders.purge('case-shared');
});

t('purging a folder drops the part files of its unfinished uploads', async (ctx) => {
  await ctx.client.folders.create('purged-with-part');
  const ticket = await ctx.client.folders.requestUpload('purged-with-part', 'purge-half.bin', 10);
  const url = new URL(ticket.url);
  url.searchParams.set('token', ticket.token);
  const status = await new Promise<number>((resolve, reject) => {
    const req = request(url, { method: 'PATCH', headers: { 'Tus-Resumable': '1.0.0', 'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': '0', 'Content-Length': '3' } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)); });
    req.on('error', reject);
    req.end('abc');
  });
  assert.is(status, 204);
  const part = join(ctx.root, '.tus', (await ctx.stores.db.query<{ id: string }>(`SELECT id FROM vfolder_transfers WHERE path = 'purge-half.bin'`)).rows[0].id);
  assert.ok(existsSync(part), 'the part file holds what was sent');
  await ctx.client.folders.delete('purged-with-part');
  await ctx.client.folders.purge('purged-with-part');
  assert.not.ok(existsSync(part), 'the part file went with the folder');
});

t.run();
