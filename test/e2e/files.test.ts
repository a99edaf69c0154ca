// File transfer with a session (API.md "Sessions": upload, download, files) on an in-process
// manager and agent over the real PostgreSQL, Redis, etcd and Docker, with one real python
// session: a 50 MB round trip with the same SHA-256 and no manager memory growth by the file's
// size, sub-directories, listings, every kind of path escape refused with nothing created
// outside /home/work, the size limit with nothing left behind, and the kernel fine afterwards.
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import Docker from 'dockerode';
import tar from 'tar-stream';
import { CLUSTER_CONFIG_PREFIX } from '../../config/cluster.ts';
import { SPOOL_ROOT } from '../../runtime/agent/files.ts';
import { FlotillaError } from '../../runtime/sdk/index.ts';
import { API_VERSION, signRequest } from '../../schema/signing.ts';
import { startInProcess, type InProcessCluster } from '../helpers/in-process.ts';
import { eventually, suite } from '../helpers/suite.ts';

const MB = 1024 * 1024;
const BIG_BYTES = 50 * MB;

type Ctx = InProcessCluster & { session: string; container: Docker.Container; dir: string; spoolBefore: string[] };
const t = suite<Ctx>('session files', { timeoutMs: 180_000 });
const docker = new Docker();

t.before(async (ctx) => {
  Object.assign(ctx, await startInProcess('files'));
  ctx.session = `files-${ctx.tag}`;
  const created = await ctx.client.sessions.create({ name: ctx.session, image: 'python', resources: { cpu: 1, mem: '512m' } });
  assert.is(created.status, 'RUNNING');
  const info = await ctx.client.sessions.get(ctx.session);
  ctx.container = docker.getContainer(info.kernels[0].containerId!);
  ctx.dir = await mkdtemp(join(tmpdir(), 'flotilla-files-test-'));
  ctx.spoolBefore = await readdir(SPOOL_ROOT).catch(() => []);
});

t.after(async (ctx) => {
  await ctx.stop?.();
  await rm(ctx.dir, { recursive: true, force: true });
  await ctx.container?.remove({ force: true }).catch(() => undefined);
});

/** A command in the kernel's container (docker exec); uid 1000 (the work user) unless told. */
async function sh(ctx: Ctx, script: string, user = '1000:1000'): Promise<{ code: number; out: string }> {
  const exec = await ctx.container.exec({ Cmd: ['sh', '-c', script], User: user, WorkingDir: '/home/work', AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({ hijack: true, stdin: false });
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (b: Buffer) => chunks.push(b));
  docker.modem.demuxStream(stream, out, out);
  await new Promise((r) => { stream.on('end', r); stream.on('close', r); });
  let info = await exec.inspect();
  for (let i = 0; info.Running && i < 100; i++) { await new Promise((r) => setTimeout(r, 20)); info = await exec.inspect(); }
  return { code: info.ExitCode ?? -1, out: Buffer.concat(chunks).toString('utf8') };
}

/** Read a tar stream: each file entry's SHA-256 and size, by name (nothing held whole). */
async function untar(stream: Readable): Promise<Map<string, { sha256: string; size: number; type: string; uid: number }>> {
  const seen = new Map<string, { sha256: string; size: number; type: string; uid: number }>();
  const extract = tar.extract();
  stream.pipe(extract);
  for await (const entry of extract) {
    const h = createHash('sha256');
    let size = 0;
    for await (const chunk of entry) { h.update(chunk as Buffer); size += (chunk as Buffer).length; }
    seen.set(entry.header.name, { sha256: h.digest('hex'), size, type: entry.header.type ?? 'file', uid: entry.header.uid ?? -1 });
  }
  return seen;
}

async function expectProblem(p: Promise<unknown>, status: number, code: string, label: string): Promise<FlotillaError> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, FlotillaError, `${label}: ${String(e)}`);
    const err = e as FlotillaError;
    assert.is(err.status, status, `${label}: ${err.code} ${err.message}`);
    assert.is(err.code, code, label);
    return err;
  }
  assert.unreachable(`${label}: not refused`);
  throw new Error('unreachable');
}

// Manager, agent and client all run in this process, so its RSS covers the three. Every byte
// that passes makes garbage (socket reads, chunk buffers), which V8 collects only once tens of
// MB of it have piled up, whatever the file's size: measured as it is, the growth must stay
// below the file's size; measured with a collection before each look (the suite runs without
// --expose-gc; V8 grants it at run time), what is held must stay well below half of it.
v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Peak RSS growth while fn runs, over the start (after a full collection); `collect`: collect before each sample. */
async function peakRssGrowth(collect: boolean, fn: () => Promise<void>): Promise<number> {
  gc();
  await new Promise((r) => setTimeout(r, 50));
  const base = process.memoryUsage().rss;
  let peak = base;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      if (collect) gc();
      peak = Math.max(peak, process.memoryUsage().rss);
      await new Promise((r) => setTimeout(r, collect ? 25 : 10));
    }
  })();
  try { await fn(); } finally { sampling = false; await sampler; }
  return Math.max(peak, process.memoryUsage().rss) - base;
}

const mb = (n: number) => `${(n / MB).toFixed(1)} MB`;

t('a 50 MB random file goes up and comes back with the same SHA-256, and the manager\'s memory does not grow by its size', async (ctx) => {
  const file = join(ctx.dir, 'big.bin');
  const hash = createHash('sha256');
  const out = createWriteStream(file);
  for (let i = 0; i < BIG_BYTES / MB; i++) {
    const chunk = randomBytes(MB);
    hash.update(chunk);
    if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  out.end();
  await finished(out);
  const sha256 = hash.digest('hex');

  // Warm up the paths (sockets, buffer pools, JIT) so that the measurement sees the transfer only.
  await ctx.client.files.upload(ctx.session, [{ path: 'warm.bin', data: randomBytes(4 * MB) }]);
  await untar(await ctx.client.files.download(ctx.session, ['warm.bin']));

  const upload = () => ctx.client.files.upload(ctx.session, [{ path: 'big.bin', data: createReadStream(file) }]);
  let entries = new Map<string, { sha256: string; size: number; type: string; uid: number }>();
  const download = async () => { entries = await untar(await ctx.client.files.download(ctx.session, ['big.bin'])); };
  const growth = { upload: [0, 0], download: [0, 0] };
  for (const [i, collect] of [false, true].entries()) {
    growth.upload[i] = await peakRssGrowth(collect, upload);
    const inside = await sh(ctx, 'sha256sum /home/work/big.bin; stat -c "%u:%g %a %s" /home/work/big.bin');
    assert.is(inside.code, 0, inside.out);
    assert.ok(inside.out.startsWith(sha256), `in the container: ${inside.out}`);
    assert.match(inside.out, new RegExp(`1000:1000 644 ${BIG_BYTES}`));
    growth.download[i] = await peakRssGrowth(collect, download);
    assert.equal(entries.get('big.bin')?.sha256, sha256);
    assert.is(entries.get('big.bin')?.size, BIG_BYTES);
  }
  for (const [what, [lazy, held]] of Object.entries(growth)) {
    console.log(`    ${what} of ${mb(BIG_BYTES)}: peak RSS growth ${mb(lazy)}; collecting before each sample ${mb(held)}`);
    assert.ok(lazy < BIG_BYTES, `${what} grew RSS by ${mb(lazy)}`);
    assert.ok(held < BIG_BYTES / 2, `${what} held ${mb(held)}`);
  }
  await sh(ctx, 'rm -f /home/work/big.bin /home/work/warm.bin');
});

t('sub-directories are created as needed, owned by the work user; a download of a directory holds them', async (ctx) => {
  await ctx.client.files.upload(ctx.session, [
    { path: 'proj/src/main.py', data: 'print("hi")\n' },
    { path: 'proj/src/util/helpers.py', data: Readable.from([Buffer.from('X = 1\n')]) },
    { path: '/home/work/proj/README', data: Buffer.from('readme\n') },
    { path: 'proj/empty', data: Buffer.alloc(0) },
  ]);
  const st = await sh(ctx, 'cd /home/work && stat -c "%u:%g %a %s %n" proj proj/src proj/src/util proj/src/main.py proj/src/util/helpers.py proj/README proj/empty');
  assert.is(st.code, 0, st.out);
  assert.equal(st.out.trim().split('\n'), [
    '1000:1000 755 4096 proj', '1000:1000 755 4096 proj/src', '1000:1000 755 4096 proj/src/util',
    '1000:1000 644 12 proj/src/main.py', '1000:1000 644 6 proj/src/util/helpers.py', '1000:1000 644 7 proj/README', '1000:1000 644 0 proj/empty',
  ]);
  // Uploading into an existing directory keeps it as it is.
  await sh(ctx, 'chmod 700 /home/work/proj');
  await ctx.client.files.upload(ctx.session, [{ path: 'proj/later.txt', data: 'later' }]);
  assert.match((await sh(ctx, 'stat -c "%a" /home/work/proj')).out, /^700/);

  const got = await untar(await ctx.client.files.download(ctx.session, ['proj', 'proj/src/main.py']));
  assert.ok(got.has('proj/src/util/helpers.py'), [...got.keys()].join(' '));
  assert.is(got.get('proj/src/util/helpers.py')?.size, 6);
  assert.is(got.get('main.py')?.size, 12, 'a file path is named by its last component, as docker cp names it');
  assert.is(got.get('proj/README')?.uid, 1000);
});

t('files lists a directory as Backend.AI returns it (a JSON string, ls -l modes, epoch mtimes), by query or JSON body', async (ctx) => {
  const before = Math.floor(Date.now() / 1000) - 5;
  await ctx.client.files.upload(ctx.session, [{ path: 'listing/a.txt', data: 'abc' }, { path: 'listing/sub/b.txt', data: 'b' }]);
  await sh(ctx, 'cd /home/work/listing && ln -s a.txt link && touch ".hidden file" && printf x > "odd\nname"');
  const { files, abspath } = await ctx.client.files.listFiles(ctx.session, 'listing');
  assert.is(abspath, '/home/work/listing');
  const byName = new Map(files.map((f) => [f.filename, f]));
  assert.equal([...byName.keys()].sort(), ['.hidden file', 'a.txt', 'link', 'odd\nname', 'sub']);
  assert.equal(byName.get('a.txt'), { filename: 'a.txt', size: 3, mtime: byName.get('a.txt')!.mtime, mode: '-rw-r--r--' });
  assert.ok(byName.get('a.txt')!.mtime >= before && byName.get('a.txt')!.mtime <= Date.now() / 1000 + 5);
  assert.is(byName.get('sub')?.mode, 'drwxr-xr-x');
  assert.is(byName.get('link')?.mode, 'lrwxrwxrwx');

  // Backend.AI's client: GET with a JSON body {path}; `files` is a JSON string.
  const url = new URL(`/session/${ctx.session}/files`, ctx.m.url);
  const date = new Date().toISOString();
  const { authorization } = signRequest({ method: 'GET', pathWithQuery: url.pathname, date, host: url.host, contentType: 'application/json', version: API_VERSION, accessKey: ctx.ak, secretKey: ctx.sk });
  const body = JSON.stringify({ path: '/home/work/listing/sub' });
  const answer = await new Promise<{ status: number; json: { files: string; abspath: string } }>((resolve, reject) => {
    const req = request(url, { method: 'GET', headers: { Date: date, 'X-BackendAI-Version': API_VERSION, Authorization: authorization, 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) } }, (res) => {
      let text = '';
      res.on('data', (b) => { text += b; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
  assert.is(answer.status, 200);
  assert.type(answer.json.files, 'string');
  assert.equal(JSON.parse(answer.json.files).map((f: { filename: string }) => f.filename), ['b.txt']);
  assert.is(answer.json.abspath, '/home/work/listing/sub');

  const root = await ctx.client.files.listFiles(ctx.session);
  assert.is(root.abspath, '/home/work');
  assert.ok(root.files.some((f) => f.filename === 'listing' && f.mode === 'drwxr-xr-x'));
  await expectProblem(ctx.client.files.listFiles(ctx.session, 'no/such/dir'), 404, 'generic-not-found', 'missing directory');
  await expectProblem(ctx.client.files.listFiles(ctx.session, 'listing/a.txt'), 400, 'invalid-api-params', 'a file is not a directory');
});

t('path escapes are refused with 400 (.., absolute, NUL, links leading out) and nothing is created outside /home/work', async (ctx) => {
  const probe = 'flotilla-escape-probe';
  // Links made in the container by its user, as code in the session could.
  const made = await sh(ctx, `cd /home/work && mkdir -p inner && ln -s /etc etc && ln -s /tmp tmp && ln -s ../../etc up && ln -s tmp chain && ln -s /tmp/${probe}-dir dangling && ln -s inner ok && ln -s /home/work/inner abs-ok`);
  assert.is(made.code, 0, made.out);

  const refusedUploads = [
    `../${probe}`, `/etc/${probe}`, `a/../../${probe}`, `/tmp/${probe}`, `/home/work/../${probe}`, `x\0y`, `/home/work`, '.',
    `etc/${probe}`, `tmp/${probe}`, `tmp`, `up/${probe}`, `chain/${probe}`, `chain/sub/${probe}`, `dangling/${probe}`, `etc`,
    // Names a directory: it must not become a file called inner2 (or inner).
    'inner2/', 'inner/.', 'inner/',
  ];
  for (const path of refusedUploads) {
    await expectProblem(ctx.client.files.upload(ctx.session, [{ path, data: 'escaped' }]), 400, 'invalid-api-params', `upload ${JSON.stringify(path)}`);
  }
  // A refused path anywhere in the request refuses all of it.
  await expectProblem(ctx.client.files.upload(ctx.session, [{ path: 'fine-before.txt', data: 'x' }, { path: `tmp/${probe}`, data: 'x' }]),
    400, 'invalid-api-params', 'mixed upload');
  for (const paths of [['../etc/passwd'], ['/etc/passwd'], ['etc/passwd'], ['tmp'], ['up'], ['chain'], ['inner', 'etc']]) {
    await expectProblem(ctx.client.files.download(ctx.session, paths), 400, 'invalid-api-params', `download ${paths.join(',')}`);
  }
  for (const path of ['..', '/etc', 'etc', 'tmp', 'up', 'chain', `a/../..`]) {
    await expectProblem(ctx.client.files.listFiles(ctx.session, path), 400, 'invalid-api-params', `list ${path}`);
  }

  // Links that stay inside are followed.
  await ctx.client.files.upload(ctx.session, [{ path: 'ok/through-link.txt', data: 'inside' }, { path: 'abs-ok/new/deep.txt', data: 'deep' }]);
  assert.is((await sh(ctx, 'cat /home/work/inner/through-link.txt /home/work/inner/new/deep.txt')).out, 'insidedeep');
  assert.ok((await ctx.client.files.listFiles(ctx.session, 'ok')).files.some((f) => f.filename === 'through-link.txt'));

  // Nothing of any attempt outside /home/work, nor its stray files inside.
  const found = await sh(ctx, `find / -xdev -name '${probe}*' 2>/dev/null; ls /home/work`, '0:0');
  assert.not.match(found.out, new RegExp(probe), found.out);
  assert.not.match(found.out, /fine-before\.txt|escaped/, found.out);
  assert.is((await sh(ctx, `test -e /tmp/${probe}-dir || test -e /etc/${probe} || test -e /tmp/${probe}`, '0:0')).code, 1);
  await sh(ctx, 'cd /home/work && rm -f etc tmp up chain dangling ok abs-ok');
});

t('a directory swapped for a link to /tmp while uploads go through it never lets a file out of /home/work', async (ctx) => {
  // Code in the session swaps `race` between a real directory and a link to /tmp, as fast as it can.
  const loop = await ctx.container.exec({
    Cmd: ['sh', '-c', 'cd /home/work && mkdir -p race && while [ ! -e .stop-race ]; do mv race race.d; ln -s /tmp race; rm race; mv race.d race 2>/dev/null; done'],
    User: '1000:1000', AttachStdout: false, AttachStderr: false,
  });
  // Detached: Docker answers at once; its answer's connection is closed here (it would keep the process up).
  const started = await loop.start({ Detach: true }) as unknown as { destroy?: () => void } | undefined;
  started?.destroy?.();
  const outcomes = { stored: 0, refused: 0, failed: [] as string[] };
  try {
    for (let i = 0; i < 40; i++) {
      try {
        await ctx.client.files.upload(ctx.session, [{ path: `race/race-probe-${i}`, data: 'raced' }]);
        outcomes.stored++;
      } catch (e) {
        if (e instanceof FlotillaError && e.status === 400) outcomes.refused++;
        else outcomes.failed.push((e as Error).message);
      }
    }
  } finally {
    await sh(ctx, 'touch /home/work/.stop-race');
    await eventually(async () => !(await loop.inspect()).Running, 10_000, 'the swapping loop stopped');
  }
  console.log(`    raced uploads: ${outcomes.stored} stored, ${outcomes.refused} refused, ${outcomes.failed.length} failed otherwise ${outcomes.failed.join('; ')}`);
  const found = await sh(ctx, "find / -xdev -name 'race-probe-*' 2>/dev/null", '0:0');
  const paths = found.out.trim().split('\n').filter(Boolean);
  assert.ok(paths.every((p) => p.startsWith('/home/work/')), found.out);
  // Paused, the container cannot swap anything between the check and the extraction: each
  // upload is stored where it was checked, or refused; none fails half-way in Docker.
  assert.equal(outcomes.failed, []);
  assert.is(paths.length, outcomes.stored, found.out);
  await sh(ctx, 'cd /home/work && rm -rf race race.d .stop-race');
});

t('an upload over session.max_upload_bytes is 413 payload-too-large and leaves nothing in the container or the agent\'s spool', async (ctx) => {
  const limit = 4 * MB;
  await ctx.stores.config.put(`${CLUSTER_CONFIG_PREFIX}session.max_upload_bytes`, String(limit));
  await eventually(() => ctx.m.config.get('session.max_upload_bytes') === limit, 10_000, 'the manager sees the new limit');
  try {
    // Streamed (chunked, no Content-Length): refused when the count passes the limit; the first file was within it.
    await expectProblem(ctx.client.files.upload(ctx.session, [
      { path: 'over/first.bin', data: Readable.from([randomBytes(MB)]) },
      { path: 'over/second.bin', data: Readable.from((function* () { for (let i = 0; i < 8; i++) yield randomBytes(MB); })()) },
    ]), 413, 'payload-too-large', 'streamed');
    // Sized (Content-Length past the limit): refused before reading the body.
    await expectProblem(ctx.client.files.upload(ctx.session, [{ path: 'over/sized.bin', data: randomBytes(limit + 2 * MB) }]), 413, 'payload-too-large', 'sized');
    // Within the margin of the multipart framing: read, counted, refused.
    await expectProblem(ctx.client.files.upload(ctx.session, [{ path: 'over/edge.bin', data: randomBytes(limit + 1) }]), 413, 'payload-too-large', 'edge');
    // Exactly the limit passes.
    await ctx.client.files.upload(ctx.session, [{ path: 'at-limit.bin', data: randomBytes(limit) }]);
  } finally {
    await ctx.stores.config.put(`${CLUSTER_CONFIG_PREFIX}session.max_upload_bytes`, String(100 * MB));
  }
  const ls = await sh(ctx, 'ls -la /home/work; ls /home/work/over 2>&1');
  assert.not.match(ls.out, /first\.bin|second\.bin|sized\.bin|edge\.bin/, ls.out);
  assert.match(ls.out, /No such file or directory/);
  assert.match(ls.out, /at-limit\.bin/);
  const spool = await eventually(async () => {
    const now = await readdir(SPOOL_ROOT).catch(() => []);
    return now.filter((n) => !ctx.spoolBefore.includes(n)).length === 0 ? now : undefined;
  }, 10_000, 'the agent\'s spool is empty again');
  assert.ok(Array.isArray(spool));
});

t('the kernel is unharmed: running, not paused, the session RUNNING, transfers still work', async (ctx) => {
  const state = (await ctx.container.inspect()).State;
  assert.ok(state.Running && !state.Paused, JSON.stringify(state));
  assert.is((await ctx.client.sessions.get(ctx.session)).status, 'RUNNING');
  await ctx.client.files.upload(ctx.session, [{ path: 'after/ok.txt', data: 'still fine' }]);
  const got = await untar(await ctx.client.files.download(ctx.session, ['after/ok.txt']));
  assert.is(got.get('ok.txt')?.sha256, createHash('sha256').update('still fine').digest('hex'));
  assert.is((await sh(ctx, 'cat /home/work/after/ok.txt')).out, 'still fine');
  // Backend.AI's client downloads with GET and reads a multipart/mixed answer of tar parts.
  const url = new URL(`/session/${ctx.session}/download`, ctx.m.url);
  const date = new Date().toISOString();
  const { authorization } = signRequest({ method: 'GET', pathWithQuery: url.pathname, date, host: url.host, contentType: 'application/json', version: API_VERSION, accessKey: ctx.ak, secretKey: ctx.sk });
  const body = JSON.stringify({ files: ['after/ok.txt'] });
  const raw = await new Promise<{ type: string; data: Buffer }>((resolve, reject) => {
    const req = request(url, { method: 'GET', headers: { Date: date, 'X-BackendAI-Version': API_VERSION, Authorization: authorization, 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.on('end', () => resolve({ type: String(res.headers['content-type']), data: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(body);
  });
  const boundary = /boundary=(\S+)/.exec(raw.type)?.[1];
  assert.ok(boundary, raw.type);
  const start = raw.data.indexOf('\r\n\r\n') + 4;
  const end = raw.data.lastIndexOf(Buffer.from(`\r\n--${boundary}--`));
  const part = await untar(Readable.from([raw.data.subarray(start, end)]));
  assert.is(part.get('ok.txt')?.size, 'still fine'.length);
});

t.run();
