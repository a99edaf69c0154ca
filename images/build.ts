// Kernel images, built locally (no registry is reachable): a root filesystem assembled from files
// on this host (the host's Python and the shared libraries it needs, busybox for a shell) is
// streamed as a tar into `docker import`, labelled with its kernelspec so agents report it.
// Idempotent: an image whose `ai.flotilla.image-hash` label matches the inputs is not rebuilt.
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, lstatSync, readdirSync, readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import tar from 'tar-stream';

export interface Kernelspec { language: 'python' | 'shell'; runner: string; version: string }
export interface ImageSpec { name: string; tag: string; aliases: string[]; kernelspec: Kernelspec; cmd: string[] }

const RUNNER_DIR = fileURLToPath(new URL('./runner/', import.meta.url));
const PYTHON = '/usr/bin/python3.11';
const PYLIB = '/usr/lib/python3.11';
const BUSYBOX = '/bin/busybox';
const APPLETS = ['sh', 'ls', 'cat', 'echo', 'mkdir', 'rm', 'cp', 'mv', 'sleep', 'ps', 'kill', 'ping', 'hostname', 'env', 'id', 'wc',
  'head', 'tail', 'grep', 'sed', 'awk', 'tar', 'find', 'chmod', 'true', 'false', 'uname', 'seq', 'dd', 'sha256sum', 'nslookup', 'ip',
  'ifconfig', 'touch', 'stat', 'du', 'df', 'which', 'test', 'ln', 'readlink', 'xargs', 'sort', 'uniq', 'tr', 'cut', 'date', 'printf',
  'yes', 'base64', 'md5sum', 'wget', 'gzip', 'gunzip', 'vi', 'less', 'more', 'whoami', 'basename', 'dirname', 'pwd', 'expr', 'od'];
// Not worth shipping in a kernel: tests, GUI toolkits, installers, bytecode caches.
const PYLIB_SKIP = /(^|\/)(test|tests|idlelib|tkinter|turtledemo|ensurepip|lib2to3|__pycache__|site-packages|dist-packages)(\/|$)/;

function busyboxVersion(): string {
  const out = execFileSync(BUSYBOX, [], { encoding: 'utf8' });
  return /BusyBox v(\d+\.\d+(?:\.\d+)?)/.exec(out)?.[1] ?? 'unknown';
}

function pythonVersion(): string {
  return execFileSync(PYTHON, ['-c', 'import sys; print("%d.%d.%d" % sys.version_info[:3])'], { encoding: 'utf8' }).trim();
}

export const KERNEL_IMAGES: ImageSpec[] = [
  {
    name: 'flotilla/python', tag: '3.11', aliases: ['python'],
    kernelspec: { language: 'python', runner: '/opt/flotilla/runner.py', version: '3.11' },
    cmd: ['/usr/bin/python3', '-u', '/opt/flotilla/runner.py'],
  },
  {
    name: 'flotilla/shell', tag: '1.35', aliases: ['shell'],
    kernelspec: { language: 'shell', runner: '/opt/flotilla/runner.sh', version: '1.35' },
    cmd: ['/bin/sh', '/opt/flotilla/runner.sh'],
  },
];

/** 'python' | 'flotilla/python' | 'flotilla/python:3.11' → its spec. */
export function resolveImage(ref: string): ImageSpec | undefined {
  return KERNEL_IMAGES.find((s) => s.aliases.includes(ref) || s.name === ref || `${s.name}:${s.tag}` === ref || `${s.name}:latest` === ref);
}

interface Entry { path: string; from?: string; link?: string; dir?: boolean; mode?: number; content?: string; uid?: number }

/** The shared libraries `ldd` names for each binary (the loader included), as host paths. */
function sharedLibraries(binaries: string[]): string[] {
  const libs = new Set<string>();
  for (let i = 0; i < binaries.length; i += 50) {
    const out = execFileSync('ldd', binaries.slice(i, i + 50), { encoding: 'utf8' });
    for (const m of out.matchAll(/(?:=>\s*)?(\/[^\s]+)\s+\(0x/g)) libs.add(m[1]);
  }
  return [...libs].sort();
}

function walk(dir: string, skip: RegExp, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (skip.test(p.slice(PYLIB.length))) continue;
    const st = lstatSync(p);
    if (st.isDirectory()) walk(p, skip, out);
    else if (st.isFile() || st.isSymbolicLink()) out.push(p);
  }
  return out;
}

function baseEntries(): Entry[] {
  return [
    ...['/bin', '/usr', '/usr/bin', '/usr/lib', '/etc', '/opt', '/opt/flotilla', '/home', '/root', '/var', '/var/tmp', '/lib', '/lib64', '/dev', '/proc', '/sys']
      .map((path) => ({ path, dir: true })),
    { path: '/tmp', dir: true, mode: 0o1777 },
    { path: '/home/work', dir: true, uid: 1000 },
    { path: '/etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nwork:x:1000:1000:work:/home/work:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' },
    { path: '/etc/group', content: 'root:x:0:\nwork:x:1000:\nnogroup:x:65534:\n' },
    { path: '/bin/busybox', from: BUSYBOX, mode: 0o755 },
    ...APPLETS.map((a) => ({ path: `/bin/${a}`, link: 'busybox' })),
  ];
}

function entriesFor(spec: ImageSpec): Entry[] {
  const entries = baseEntries();
  if (spec.kernelspec.language === 'shell') {
    entries.push({ path: '/opt/flotilla/runner.sh', from: join(RUNNER_DIR, 'runner.sh'), mode: 0o755 });
    return entries;
  }
  const stdlib = walk(PYLIB, PYLIB_SKIP);
  const dynload = stdlib.filter((p) => p.endsWith('.so'));
  for (const lib of sharedLibraries([PYTHON, ...dynload])) entries.push({ path: lib, from: realpathSync(lib), mode: 0o755 });
  entries.push(
    { path: '/usr/bin/python3.11', from: PYTHON, mode: 0o755 },
    { path: '/usr/bin/python3', link: 'python3.11' },
    { path: '/usr/bin/python', link: 'python3.11' },
    { path: '/opt/flotilla/runner.py', from: join(RUNNER_DIR, 'runner.py'), mode: 0o644 },
  );
  for (const p of stdlib) {
    const st = lstatSync(p);
    entries.push(st.isSymbolicLink() ? { path: p, link: readlinkSync(p) } : { path: p, from: p, mode: st.mode & 0o777 });
  }
  return entries;
}

/** Parent directories every entry needs, in order. */
function withParents(entries: Entry[]): Entry[] {
  const seen = new Set(entries.filter((e) => e.dir).map((e) => e.path));
  const out: Entry[] = [];
  const ensure = (dir: string) => {
    if (dir === '/' || seen.has(dir)) return;
    ensure(dirname(dir));
    seen.add(dir);
    out.push({ path: dir, dir: true });
  };
  for (const e of entries) { ensure(dirname(e.path)); out.push(e); }
  return out;
}

function sizeOf(e: Entry): number { return e.from ? statSync(e.from).size : e.content ? Buffer.byteLength(e.content) : 0; }

function hashOf(spec: ImageSpec, changes: string[], entries: Entry[]): string {
  const h = createHash('sha256').update(JSON.stringify({ spec, changes }));
  for (const e of entries) {
    h.update(`${e.path}|${e.link ?? ''}|${e.mode ?? ''}|${e.content ?? ''}`);
    if (e.from) {
      const st = statSync(e.from);
      h.update(`|${st.size}|${st.mtimeMs}`);
      if (e.from.startsWith(RUNNER_DIR)) h.update(readFileSync(e.from));
    }
  }
  return h.digest('hex').slice(0, 32);
}

async function writeTar(pack: tar.Pack, entries: Entry[], onBytes: (n: number) => void): Promise<void> {
  const add = (header: Parameters<tar.Pack['entry']>[0], body?: string | NodeJS.ReadableStream) => new Promise<void>((resolve, reject) => {
    if (body === undefined || typeof body === 'string') {
      pack.entry(header, body ?? "", (err) => (err ? reject(err) : resolve()));
      return;
    }
    const sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
    body.on('data', (b: Buffer) => onBytes(b.length));
    body.pipe(sink);
  });
  for (const e of entries) {
    const name = e.path.replace(/^\//, '');
    const owner = { uid: e.uid ?? 0, gid: e.uid ?? 0 };
    if (e.dir) await add({ name, type: 'directory', mode: e.mode ?? 0o755, ...owner });
    else if (e.link) await add({ name, type: 'symlink', linkname: e.link, ...owner });
    else if (e.content !== undefined) await add({ name, size: Buffer.byteLength(e.content), mode: e.mode ?? 0o644, ...owner }, e.content);
    else await add({ name, size: statSync(e.from!).size, mode: e.mode ?? 0o644, ...owner }, createReadStream(e.from!));
  }
  pack.finalize();
}

/** Build the kernel images that are missing or out of date. */
export async function buildImages(opts: { docker?: Docker; names?: string[]; force?: boolean; onProgress?: (line: string) => void } = {}): Promise<Array<{ name: string; id: string; built: boolean; bytes: number }>> {
  const docker = opts.docker ?? new Docker();
  const say = opts.onProgress ?? (() => undefined);
  const results = [];
  for (const base of KERNEL_IMAGES) {
    const short = base.aliases[0];
    if (opts.names && !opts.names.includes(short) && !opts.names.includes(base.name)) continue;
    const version = short === 'python' ? pythonVersion() : busyboxVersion();
    const spec: ImageSpec = { ...base, kernelspec: { ...base.kernelspec, version } };
    const ref = `${spec.name}:${spec.tag}`;
    const started = Date.now();
    say(`${short}: collecting files…`);
    const entries = withParents(entriesFor(spec));
    const changes = [
      `LABEL ai.flotilla.kernelspec=${JSON.stringify(JSON.stringify(spec.kernelspec))}`,
      'WORKDIR /home/work',
      // User code runs as the unprivileged work user (uid 1000), as in Backend.AI's kernels.
      'USER work',
      'ENV PATH=/usr/local/bin:/usr/bin:/bin',
      'ENV LANG=C.UTF-8',
      'ENV PYTHONDONTWRITEBYTECODE=1',
      `CMD ${JSON.stringify(spec.cmd)}`,
    ];
    const hash = hashOf(spec, changes, entries);
    const total = entries.reduce((n, e) => n + sizeOf(e), 0);
    const existing = await docker.getImage(ref).inspect().catch(() => undefined);
    if (!opts.force && existing?.Config?.Labels?.['ai.flotilla.image-hash'] === hash) {
      say(`${short}: ${ref} is up to date`);
      results.push({ name: ref, id: existing.Id, built: false, bytes: existing.Size });
      continue;
    }
    say(`${short}: ${entries.length} files, ${(total / 1e6).toFixed(1)} MB`);
    const child = spawn('docker', ['import', ...[...changes, `LABEL ai.flotilla.image-hash=${hash}`].flatMap((c) => ['--change', c]), '-', ref], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b) => { out += b; });
    child.stderr.on('data', (b) => { out += b; });
    const exited = new Promise<number>((resolve, reject) => { child.on('error', reject); child.on('exit', (code) => resolve(code ?? 1)); });
    const pack = tar.pack();
    pack.pipe(child.stdin);
    let sent = 0;
    let shown = 0;
    await writeTar(pack, entries, (n) => {
      sent += n;
      const pct = Math.floor((sent / total) * 10) * 10;
      if (pct > shown) { shown = pct; say(`${short}: importing… ${pct}%`); }
    });
    const code = await exited;
    if (code !== 0) throw new Error(`docker import of ${ref} failed (exit ${code}): ${out.trim()}`);
    await docker.getImage(ref).tag({ repo: spec.name, tag: 'latest' });
    const info = await docker.getImage(ref).inspect();
    say(`${short}: done in ${((Date.now() - started) / 1000).toFixed(1)}s (${(info.Size / 1e6).toFixed(1)} MB)`);
    results.push({ name: ref, id: info.Id, built: true, bytes: info.Size });
  }
  return results;
}
