// Virtual folder throughput (issue 9): a 1 GB file uploaded (SDK → tus PATCH → the manager's
// part file → renamed into the folder) and downloaded (the manager streams it → SDK → a local
// file), against a plain copy of the same file on the same disk (`cp`) in the same run. Rounds
// are interleaved (copy, upload, download) so drift hits all alike; the median of each counts.
// Every round's upload and download are checked by size, the last ones by SHA-256.
// Run: node --import tsx bench/vfolders.ts [--mb 1024] [--rounds 3]
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { CLUSTER_CONFIG_PREFIX } from '../config/cluster.ts';
import { loadProcessSettings } from '../config/settings.ts';
import { createLogger } from '../runtime/log.ts';
import { startManager } from '../runtime/manager/index.ts';
import { Client } from '../runtime/sdk/index.ts';
import { openStores } from '../runtime/stores/index.ts';
import { fmt, freshBenchDatabase, intArg, log, summarize, writeResultsSection } from './lib.ts';

const BENCH = 'vfolders';
const MB = 1024 * 1024;
const SIZE_MB = intArg('mb', 1024);
const ROUNDS = intArg('rounds', 3);
const SIZE = SIZE_MB * MB;

const work = await mkdtemp(join(process.env.FLOTILLA_BENCH_DIR ?? tmpdir(), 'flotilla-bench-vf-'));
const root = join(work, 'root');
const src = join(work, 'source.bin');
const tag = randomBytes(4).toString('hex');
const ak = `AK${randomBytes(9).toString('hex').toUpperCase()}`;
const sk = randomBytes(20).toString('base64');
const b = await freshBenchDatabase();
const settings = loadProcessSettings({
  ...process.env, FLOTILLA_DATABASE_URL: b.url, FLOTILLA_ETCD_NAMESPACE: `bench/vfolders-${tag}/`, FLOTILLA_MANAGER_PORT: '0',
  FLOTILLA_ADMIN_ACCESS_KEY: ak, FLOTILLA_ADMIN_SECRET_KEY: sk,
});
const stores = await openStores(settings);
await stores.config.put(`${CLUSTER_CONFIG_PREFIX}vfolder.root`, root);
const m = await startManager({ settings, stores, log: createLogger('bench', 'error') });
const client = new Client({ endpoint: m.url, accessKey: ak, secretKey: sk, timeoutMs: 600_000 });

const sha256 = async (file: string) => {
  const h = createHash('sha256');
  for await (const c of createReadStream(file, { highWaterMark: 4 * MB })) h.update(c as Buffer);
  return h.digest('hex');
};
const timed = async (fn: () => Promise<void> | void) => { const t0 = performance.now(); await fn(); return performance.now() - t0; };
const mbps = (ms: number) => SIZE / MB / (ms / 1000);

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
  const upMs: number[] = [];
  const downMs: number[] = [];
  let downSha = '';
  let upSha = '';
  for (let round = 0; round < ROUNDS; round++) {
    const copy = join(work, `copy-${round}.bin`);
    copyMs.push(await timed(() => { execFileSync('cp', [src, copy]); }));
    await rm(copy);

    const remote = `round-${round}.bin`;
    upMs.push(await timed(() => client.folders.upload('bench', remote, src)));
    const host = (await m.vfolders.resolveMounts(ak, ['bench'], {}))[0].hostPath;
    if ((await stat(join(host, remote))).size !== SIZE) throw new Error('uploaded size differs');

    const dest = join(work, `down-${round}.bin`);
    downMs.push(await timed(async () => { await pipeline(await client.folders.download('bench', remote), createWriteStream(dest)); }));
    if ((await stat(dest)).size !== SIZE) throw new Error('downloaded size differs');
    if (round === ROUNDS - 1) { upSha = await sha256(join(host, remote)); downSha = await sha256(dest); }
    await rm(dest);
    await client.folders.deleteFiles('bench', [remote]);
    log(BENCH, `round ${round + 1}/${ROUNDS}: cp ${fmt(mbps(copyMs.at(-1)!))} MB/s, upload ${fmt(mbps(upMs.at(-1)!))} MB/s, download ${fmt(mbps(downMs.at(-1)!))} MB/s`);
  }
  if (upSha !== srcSha || downSha !== srcSha) throw new Error('SHA-256 mismatch');

  const c = summarize(copyMs).p50;
  const u = summarize(upMs).p50;
  const d = summarize(downMs).p50;
  const rows = [
    ['plain copy (`cp`, same disk), median', `${fmt(mbps(c))} MB/s (${fmt(c / 1000, 2)} s)`],
    ['upload (SDK → tus PATCH → folder), median', `${fmt(mbps(u))} MB/s (${fmt(u / 1000, 2)} s)`],
    ['download (folder → streamed GET → local file), median', `${fmt(mbps(d))} MB/s (${fmt(d / 1000, 2)} s)`],
    ['rounds', String(ROUNDS)],
    ['SHA-256 of the last round (source = uploaded = downloaded)', `${srcSha.slice(0, 16)}…`],
  ];
  console.log(rows.map((r) => r.join(': ')).join('\n'));
  writeResultsSection({
    title: 'Virtual folders (issue 9)',
    table: { headers: ['figure', 'value'], rows },
    ratio: `upload / cp = **${fmt(c / u, 2)}×**, download / cp = **${fmt(c / d, 2)}×** (target ≥ 0.7×)`,
    notes: [
      `One process: the in-process manager (real PostgreSQL, Redis, etcd) and the SDK client over loopback HTTP; a ${SIZE_MB} MB random file on the same disk as vfolder.root; nothing fsynced in any of the three (page cache, as cp leaves it).`,
      'Upload: request-upload, HEAD for the offset, one tus PATCH with the whole file, streamed by the manager into a part file with positional writes of up to 1 MiB, then renamed into the folder. Download: request-download, then GET streaming the file in 1 MiB reads.',
      'cp copies in the kernel (copy_file_range), no bytes through user space; the flotilla paths read, send over a socket, receive and write every byte once each, and here the client and the manager share one Node event loop (one process on a 2-core machine).',
      ...(Math.min(c / u, c / d) < 0.7 ? ['Target not met (issue 9 stays open on this point): against an in-kernel copy from the page cache the HTTP paths reach a tenth of it. Next steps: measure with the manager in its own process (the client halves the event loop here), larger socket reads on the download client (16 KiB IncomingMessage chunks), and sendfile-style zero-copy for downloads.'] : []),
    ],
  });
} finally {
  await m.close();
  for (const k of Object.keys(await stores.config.getPrefix(''))) await stores.config.delete(k);
  await stores.close();
  await b.drop();
  await rm(work, { recursive: true, force: true });
}
