// Virtual folder throughput (issue 9): a 1 GB file uploaded (SDK → tus PATCH → the manager's
// part file → renamed into the folder) and downloaded (the manager streams it → SDK → a local
// file), against a plain copy of the same file on the same disk (`cp`) in the same run, and
// against `cat src > dst` (read(2)/write(2) through user space: GNU cp 9 copies with
// copy_file_range(2), in the kernel). The
// manager runs in its own process (`bin/flotilla.js manager`, as in production), the SDK in this
// one. Rounds are interleaved (copy, upload, download, and the extra baselines) so drift hits all
// alike; the median of each counts. Every round's upload and download are checked by size, the
// last ones by SHA-256.
// Run: node --import tsx bench/vfolders.ts [--mb 1024] [--rounds 5]
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { copyFile, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLUSTER_CONFIG_PREFIX } from '../config/cluster.ts';
import { loadProcessSettings } from '../config/settings.ts';
import { Client } from '../runtime/sdk/index.ts';
import { openStores } from '../runtime/stores/index.ts';
import { fmt, freshBenchDatabase, intArg, log, summarize, writeResultsSection } from './lib.ts';

const BENCH = 'vfolders';
const MB = 1024 * 1024;
const SIZE_MB = intArg('mb', 1024);
const ROUNDS = intArg('rounds', 5);
const SIZE = SIZE_MB * MB;
/** `--no-write`: print the figures, leave bench/RESULTS.md alone (for trying things out). */
const WRITE = !process.argv.includes('--no-write');
const BIN = fileURLToPath(new URL('../bin/flotilla.js', import.meta.url));

const work = await mkdtemp(join(process.env.FLOTILLA_BENCH_DIR ?? tmpdir(), 'flotilla-bench-vf-'));
const root = join(work, 'root');
const src = join(work, 'source.bin');
const tag = randomBytes(4).toString('hex');
const ak = `AK${randomBytes(9).toString('hex').toUpperCase()}`;
const sk = randomBytes(20).toString('base64');
const b = await freshBenchDatabase();
const env: Record<string, string> = {
  FLOTILLA_DATABASE_URL: b.url, FLOTILLA_ETCD_NAMESPACE: `bench/vfolders-${tag}/`, FLOTILLA_MANAGER_PORT: '0',
  FLOTILLA_ADMIN_ACCESS_KEY: ak, FLOTILLA_ADMIN_SECRET_KEY: sk, FLOTILLA_LOG_LEVEL: 'error', FLOTILLA_SECRET_ENCRYPTION_KEY: `bench-${tag}`,
};
const settings = loadProcessSettings({ ...process.env, ...env });
const stores = await openStores(settings);
await stores.config.put(`${CLUSTER_CONFIG_PREFIX}vfolder.root`, root);

// The manager in its own process, as deployed (and as the e2e tests start it).
const manager = spawn(process.execPath, [...(process.env.BENCH_MANAGER_NODE_ARGS ?? '').split(' ').filter(Boolean), BIN, 'manager'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
const managerExited = new Promise<number | null>((r) => manager.on('exit', (code) => r(code)));
const managerUrl = await new Promise<string>((resolve, reject) => {
  let out = '';
  const onData = (chunk: Buffer) => {
    out += chunk.toString();
    const m = /manager listening on (http:\/\/\S+)/.exec(out);
    if (m) resolve(m[1]);
  };
  manager.stdout!.on('data', onData);
  manager.stderr!.on('data', onData);
  void managerExited.then((code) => reject(new Error(`the manager exited with ${code}:\n${out.slice(-3000)}`)));
  setTimeout(() => reject(new Error(`the manager was not listening within 60 s:\n${out.slice(-3000)}`)), 60_000).unref();
});
const client = new Client({ endpoint: managerUrl, accessKey: ak, secretKey: sk, timeoutMs: 600_000 });

/**
 * The transport alone, for the notes: SIZE bytes from memory through a loopback TCP connection
 * to another Node process that discards them (no HTTP, no files). No Node transfer can beat it.
 */
const TCP_SINK = `import net from 'node:net';
const srv = net.createServer((s) => { s.on('data', () => {}); s.on('end', () => { s.end(); srv.close(); }); });
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));`;
async function loopbackTcp(): Promise<number> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', TCP_SINK], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((r) => child.stdout!.once('data', (d: Buffer) => r(Number(String(d).trim()))));
  const { connect } = await import('node:net');
  const block = Buffer.alloc(4 * MB, 7);
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const sock = connect({ port, host: '127.0.0.1' }, async () => {
      for (let sent = 0; sent < SIZE; sent += block.length) if (!sock.write(block)) await new Promise((r) => sock.once('drain', r));
      sock.end();
    });
    sock.on('error', reject);
    sock.resume();
    sock.on('close', () => resolve());
  });
  const ms = performance.now() - t0;
  await new Promise((r) => child.once('exit', r));
  return ms;
}

/** The file the manager stored for `remote` (its layout is the manager's business: search the root). */
async function storedPath(remote: string): Promise<string> {
  const hit = (await readdir(root, { recursive: true })).find((p) => p.endsWith(`/${remote}`) && !p.startsWith('.tus'));
  if (!hit) throw new Error(`${remote} is not below the storage root`);
  return join(root, hit);
}

const sha256 = async (file: string) => {
  const h = createHash('sha256');
  for await (const c of createReadStream(file, { highWaterMark: 4 * MB })) h.update(c as Buffer);
  return h.digest('hex');
};
const timed = async (fn: () => Promise<void> | void) => { const t0 = performance.now(); await fn(); return performance.now() - t0; };
const mbps = (ms: number) => SIZE / MB / (ms / 1000);
/** CPU seconds (user + system) the manager process has used so far. */
const managerCpu = () => {
  const f = readFileSync(`/proc/${manager.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
};
/** CPU seconds (user + system, every thread) this process has used so far. */
const selfCpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
/** Run `fn`; its wall time (ms) and the CPU seconds of the manager and of this process meanwhile. */
async function measured(fn: () => Promise<void>): Promise<{ ms: number; mgr: number; client: number }> {
  const m0 = managerCpu();
  const c0 = selfCpu();
  const ms = await timed(fn);
  return { ms, mgr: managerCpu() - m0, client: selfCpu() - c0 };
}
const list = (xs: number[], f: (x: number) => string) => xs.map(f).join(', ');

try {
  log(BENCH, `writing a ${SIZE_MB} MB random source file in ${work}`);
  const out = createWriteStream(src);
  const block = randomBytes(4 * MB);
  for (let i = 0; i < SIZE / block.length; i++) {
    // Each block differs (a counter in its first bytes), so nothing downstream can dedupe.
    block.writeUInt32LE(i, 0);
    if (!out.write(Buffer.from(block))) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  await new Promise<void>((r) => out.end(() => r()));
  const srcSha = await sha256(src);
  await client.folders.create('bench');

  const copyMs: number[] = [];
  const catMs: number[] = [];
  const upCpu: Array<{ mgr: number; client: number }> = [];
  const downCpu: Array<{ mgr: number; client: number }> = [];
  const copyFileMs: number[] = [];
  const tcpMs: number[] = [];
  const upMs: number[] = [];
  const downMs: number[] = [];
  let downSha = '';
  let upSha = '';
  for (let round = 0; round < ROUNDS; round++) {
    const copy = join(work, `copy-${round}.bin`);
    copyMs.push(await timed(() => { execFileSync('cp', [src, copy]); }));
    await rm(copy);
    catMs.push(await timed(() => { execFileSync('sh', ['-c', 'cat "$1" > "$2"', 'sh', src, copy]); }));
    if ((await stat(copy)).size !== SIZE) throw new Error('cat copied a different size');
    await rm(copy);
    copyFileMs.push(await timed(() => copyFile(src, copy)));
    await rm(copy);
    tcpMs.push(await loopbackTcp());

    const remote = `round-${round}.bin`;
    const up = await measured(() => client.folders.upload('bench', remote, src));
    upMs.push(up.ms);
    upCpu.push(up);
    const stored = await storedPath(remote);
    if ((await stat(stored)).size !== SIZE) throw new Error('uploaded size differs');

    const dest = join(work, `down-${round}.bin`);
    const down = await measured(async () => { await client.folders.downloadFile('bench', remote, dest); });
    downMs.push(down.ms);
    downCpu.push(down);
    if ((await stat(dest)).size !== SIZE) throw new Error('downloaded size differs');
    if (round === ROUNDS - 1) { upSha = await sha256(stored); downSha = await sha256(dest); }
    await rm(dest);
    await client.folders.deleteFiles('bench', [remote]);
    log(BENCH, `round ${round + 1}/${ROUNDS}: cp ${fmt(mbps(copyMs.at(-1)!))} MB/s, cat ${fmt(mbps(catMs.at(-1)!))} MB/s, copyFile ${fmt(mbps(copyFileMs.at(-1)!))} MB/s, loopback TCP ${fmt(mbps(tcpMs.at(-1)!))} MB/s, upload ${fmt(mbps(upMs.at(-1)!))} MB/s (CPU s: manager ${fmt(up.mgr, 2)}, client ${fmt(up.client, 2)}), download ${fmt(mbps(downMs.at(-1)!))} MB/s (CPU s: manager ${fmt(down.mgr, 2)}, client ${fmt(down.client, 2)})`);
  }
  if (upSha !== srcSha || downSha !== srcSha) throw new Error('SHA-256 mismatch');

  const c = summarize(copyMs).p50;
  const rw = summarize(catMs).p50;
  const med = (xs: number[]) => summarize(xs).p50;
  const u = summarize(upMs).p50;
  const d = summarize(downMs).p50;
  const cf = summarize(copyFileMs).p50;
  const tcp = summarize(tcpMs).p50;
  const rows = [
    ['plain copy (`cp`, same disk; copy_file_range in the kernel), median', `${fmt(mbps(c))} MB/s (${fmt(c / 1000, 2)} s)`],
    ['plain copy through user space (`cat src > dst`: read/write 128 KiB), median', `${fmt(mbps(rw))} MB/s (${fmt(rw / 1000, 2)} s)`],
    ['upload (SDK → tus PATCH → folder), median', `${fmt(mbps(u))} MB/s (${fmt(u / 1000, 2)} s)`],
    ['download (folder → streamed GET → local file), median', `${fmt(mbps(d))} MB/s (${fmt(d / 1000, 2)} s)`],
    ['extra baseline: fs.copyFile (Node, same disk), median', `${fmt(mbps(cf))} MB/s (${fmt(cf / 1000, 2)} s)`],
    ['extra baseline: loopback TCP alone (Node → Node process, memory to memory, no HTTP, no files), median', `${fmt(mbps(tcp))} MB/s (${fmt(tcp / 1000, 2)} s)`],
    ['CPU seconds per upload, median: manager / client (SDK)', `${fmt(med(upCpu.map((x) => x.mgr)), 2)} / ${fmt(med(upCpu.map((x) => x.client)), 2)}`],
    ['CPU seconds per download, median: manager / client (SDK)', `${fmt(med(downCpu.map((x) => x.mgr)), 2)} / ${fmt(med(downCpu.map((x) => x.client)), 2)}`],
    ['rounds', String(ROUNDS)],
    ['every round, MB/s: cp', list(copyMs, (x) => fmt(mbps(x)))],
    ['every round, MB/s: cat', list(catMs, (x) => fmt(mbps(x)))],
    ['every round, MB/s: upload', list(upMs, (x) => fmt(mbps(x)))],
    ['every round, MB/s: download', list(downMs, (x) => fmt(mbps(x)))],
    ['every round, MB/s: fs.copyFile', list(copyFileMs, (x) => fmt(mbps(x)))],
    ['every round, MB/s: loopback TCP', list(tcpMs, (x) => fmt(mbps(x)))],
    ['SHA-256 of the last round (source = uploaded = downloaded)', `${srcSha.slice(0, 16)}…`],
  ];
  console.log(rows.map((r) => r.join(': ')).join('\n'));
  if (WRITE) writeResultsSection({
    title: 'Virtual folders (issue 9)',
    table: { headers: ['figure', 'value'], rows },
    ratio: `upload / cp = **${fmt(c / u, 2)}×**, download / cp = **${fmt(c / d, 2)}×** (target ≥ 0.7×, judged against cp); against the read/write copy (cat): upload ${fmt(rw / u, 2)}×, download ${fmt(rw / d, 2)}×`,
    notes: [
      `Two processes, as deployed: the manager (\`bin/flotilla.js manager\`, real PostgreSQL, Redis, etcd) and this one with the SDK client, over loopback HTTP; a ${SIZE_MB} MB random file on the same disk as vfolder.root; nothing fsynced anywhere (page cache, as cp leaves it). The machine has 2 cores shared with whatever else runs: figures drift from round to round, hence the medians and the same-round baselines.`,
      'Upload: request-upload, HEAD for the offset, one tus PATCH with the whole file: the SDK reads it 1 MiB at a time into three reused buffers (schema/positional-io.ts sendFileRange: a buffer is read into again once the socket has taken it). The manager checks token, tenancy and quota as before and consumes the raw request stream (fastify parses nothing: the tus content type\'s parser is a no-op; nothing is logged per chunk), gathering the socket\'s chunks (at most 64 KiB each: libuv\'s read size) into 1 MiB batches, each one positional writev(2) into the part file, one write in flight while the next batch arrives (the request paused while a full batch waits); renamed into the folder fd-relative at the end. Download: request-download, then GET: the reply is hijacked and the descriptor opened with O_NOFOLLOW is sent with sendFileRange (1 MiB reads into three reused buffers, written to the socket directly, no stream in between); the SDK\'s downloadFile gathers the response into 1 MiB positional writes (the same writeStreamAt as the manager\'s PATCH).',
      `Baselines, same rounds: cp ${fmt(mbps(c))} MB/s uses copy_file_range(2) (GNU coreutils 9: one copy inside the kernel; ext4 has no reflink, so the data does move, page cache to page cache); cat ${fmt(mbps(rw))} MB/s copies through user space with read(2)/write(2) of 128 KiB (two copies). The target is judged against cp, the plain file copy the issue names; the ratios against cat are given beside it. Extra: fs.copyFile ${fmt(mbps(cf))} MB/s (${fmt(c / cf, 2)}× cp); the loopback TCP connection alone, Node process to Node process, memory to memory, no HTTP and no files: ${fmt(mbps(tcp))} MB/s (${fmt(c / tcp, 2)}× cp). Upload and download reach ${fmt(tcp / u, 2)}× and ${fmt(tcp / d, 2)}× of that transport ceiling.`,
      'Where the time goes (perf, strace -c, --cpu-prof of the manager): the JavaScript is a small part (the manager\'s profile is mostly idle; per GB an upload is 16 K socket reads of 64 KiB and 1 K pwritev of 1 MiB). The CPU goes to the kernel\'s copies (page cache → user, user → socket, socket → user, user → page cache: four per byte, against one for cp and two for cat), loopback TCP, and page faults: buffers allocated per read (fs.createReadStream\'s 1 MiB chunks; Node\'s 64 KiB socket reads) are past glibc\'s trim threshold, so their memory goes back to the kernel and faults in again page by page, which on this VM costs as much as a copy. The sending sides now reuse their buffers; the receiving sides cannot (Node allocates each socket read itself). Node offers no sendfile(2) or splice(2) for HTTP, and a TCP socket delivers at most 64 KiB per read.',
      ...(Math.min(c / u, c / d) < 0.7 ? [`Target not met (issue 9 stays open on this point): ${fmt(c / u, 2)}× and ${fmt(c / d, 2)}× of cp (${fmt(rw / u, 2)}× and ${fmt(rw / d, 2)}× of cat). The ratio is bounded by the transport: bytes through loopback TCP between two Node processes, with nothing else to do, already run at ${fmt(c / tcp, 2)}× of cp here, so 0.7× of a page-cache copy is out of reach for any HTTP path from Node on this 2-core machine. What would close more of the gap: a native sendfile/splice path (an addon), or a same-host shortcut that skips the socket.`] : []),
    ],
  });
} finally {
  manager.kill('SIGTERM');
  await managerExited;
  for (const k of Object.keys(await stores.config.getPrefix(''))) await stores.config.delete(k);
  await stores.close();
  await b.drop();
  await rm(work, { recursive: true, force: true });
}
