// Kernel images (DESIGN.md §8). No registry is reachable, so each image's root filesystem is
// described as a manifest of host files plus a few generated ones, streamed as a tar straight
// into `docker import` (no copy on disk, and ownership such as /home/work = 1000:1000 is set in
// the tar headers instead of needing chown in a scratch directory).
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import Dockerode from 'dockerode';
import tar from 'tar-stream';

const run = promisify(execFile);

export interface Kernelspec {
  language: 'python' | 'shell';
  /** Absolute path of the runner in the container. */
  runner: string;
  version: string;
}

export interface ImageSpec {
  name: string;
  tag: string;
  aliases: string[];
  kernelspec: Kernelspec;
}

export const KERNELSPEC_LABEL = 'ai.flotilla.kernelspec';
export const IMAGE_HASH_LABEL = 'ai.flotilla.image-hash';

// Tags carry the version of the host binary they are built from; build() checks it.
export const KERNEL_IMAGES: ImageSpec[] = [
  {
    name: 'flotilla/python',
    tag: '3.11',
    aliases: ['python'],
    kernelspec: { language: 'python', runner: '/opt/flotilla/runner.py', version: '3.11' },
  },
  {
    name: 'flotilla/shell',
    tag: '1.35',
    aliases: ['shell'],
    kernelspec: { language: 'shell', runner: '/opt/flotilla/runner.sh', version: '1.35' },
  },
];

/** 'python' | 'flotilla/python' | 'flotilla/python:3.11' | 'flotilla/python:latest' -> spec. */
export function resolveImage(ref: string): ImageSpec | undefined {
  const r = ref.trim();
  return KERNEL_IMAGES.find(
    (s) => s.aliases.includes(r) || r === s.name || r === `${s.name}:${s.tag}` || r === `${s.name}:latest`,
  );
}

const RUNNER_DIR = fileURLToPath(new URL('./runner/', import.meta.url));
const PYTHON = '/usr/bin/python3.11';
const PYTHON_LIB = '/usr/lib/python3.11';
const BUSYBOX = '/usr/bin/busybox';
const APPLETS = [
  'sh', 'ls', 'cat', 'echo', 'mkdir', 'rm', 'cp', 'mv', 'sleep', 'ps', 'kill', 'ping', 'hostname',
  'env', 'id', 'wc', 'head', 'tail', 'grep', 'sed', 'awk', 'tar', 'find', 'chmod', 'true', 'false',
  'uname', 'seq', 'dd', 'sha256sum', 'nslookup', 'ip', 'ifconfig', 'touch', 'stat', 'du', 'df',
  'which', 'test', 'ln', 'readlink', 'xargs', 'sort', 'uniq', 'tr', 'cut', 'date', 'printf',
  'yes', 'base64', 'md5sum', 'wget', 'gzip', 'gunzip', 'vi', 'less', 'more', 'whoami', 'basename',
  'dirname', 'pwd', 'expr', 'od',
];
// Not needed to run code: tests, GUI, pip bootstrap, the deprecated lib2to3, bytecode caches,
// and config-3.11-*, which only holds static libraries and build files for compiling
// C extensions (24 MB).
const STDLIB_SKIP_DIRS = new Set(['test', 'tests', 'idle_test', 'idlelib', 'tkinter', 'turtledemo', 'ensurepip', 'lib2to3', '__pycache__']);
const STDLIB_SKIP_PREFIX = 'config-3.11';
// Lets `ssl.create_default_context()` verify certificates (OpenSSL's default CA file).
const CA_FILE = '/usr/lib/ssl/cert.pem';
// Bumped when the layout produced here changes in a way the inputs do not show.
const FORMAT = 1;
// Timestamp of generated entries, fixed so that they do not change the content hash.
const EPOCH = new Date(0);

type Entry =
  | { type: 'directory'; mode: number; uid: number; gid: number }
  | { type: 'symlink'; target: string }
  | { type: 'file'; mode: number; uid: number; gid: number; size: number; mtime: Date; source: string }
  | { type: 'file'; mode: number; uid: number; gid: number; size: number; mtime: Date; content: Buffer };

/** The root filesystem of one image: absolute container path -> entry. */
class RootFs {
  readonly entries = new Map<string, Entry>();

  private put(p: string, e: Entry): void {
    const old = this.entries.get(p);
    if (old) {
      if (old.type === e.type && (e.type !== 'symlink' || (old as { target: string }).target === e.target)) return;
      throw new Error(`rootfs: conflicting entries for ${p} (${old.type} vs ${e.type})`);
    }
    const parent = path.posix.dirname(p);
    if (parent !== p && !this.entries.has(parent)) this.dir(parent);
    this.entries.set(p, e);
  }

  dir(p: string, mode = 0o755, uid = 0, gid = 0): void {
    if (p !== '/') this.put(p, { type: 'directory', mode, uid, gid });
  }

  symlink(p: string, target: string): void {
    this.put(p, { type: 'symlink', target });
  }

  file(p: string, content: Buffer | string, mode = 0o644): void {
    const buf = Buffer.from(content);
    this.put(p, { type: 'file', mode, uid: 0, gid: 0, size: buf.length, mtime: EPOCH, content: buf });
  }

  /** Copies a host file to another container path. */
  async hostFileAs(p: string, source: string, mode?: number): Promise<void> {
    const st = await lstat(source);
    if (!st.isFile()) throw new Error(`rootfs: ${source} is not a regular file`);
    this.put(p, { type: 'file', mode: mode ?? st.mode & 0o7777, uid: 0, gid: 0, size: st.size, mtime: st.mtime, source });
  }

  /**
   * Mirrors a host path at the same place, including every symlink met on the way (for
   * example /lib -> usr/lib and /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...), so
   * the paths ldd reports resolve the same way in the container.
   */
  async hostPath(p: string): Promise<void> {
    let rest = path.posix.resolve(p).split('/').filter(Boolean);
    let cur = '/';
    for (let hops = 0; rest.length > 0; ) {
      const next = path.posix.join(cur, rest.shift()!);
      const st = await lstat(next);
      if (st.isSymbolicLink()) {
        if (++hops > 40) throw new Error(`rootfs: too many symlinks resolving ${p}`);
        const target = await readlink(next);
        this.symlink(next, target);
        rest = [...path.posix.resolve(cur, target).split('/').filter(Boolean), ...rest];
        cur = '/';
      } else if (st.isDirectory()) {
        if (!this.entries.has(next)) this.dir(next, st.mode & 0o7777);
        cur = next;
      } else if (st.isFile() && rest.length === 0) {
        await this.hostFileAs(next, next);
      } else {
        throw new Error(`rootfs: cannot add ${next} (resolving ${p})`);
      }
    }
  }

  /** Mirrors a host directory tree; `skip(name, isDir)` prunes entries. */
  async hostTree(dir: string, skip: (name: string, isDir: boolean) => boolean): Promise<void> {
    await this.hostPath(dir);
    for (const d of await readdir(dir, { withFileTypes: true })) {
      if (skip(d.name, d.isDirectory())) continue;
      const p = path.posix.join(dir, d.name);
      if (d.isDirectory()) await this.hostTree(p, skip);
      else await this.hostPath(p);
    }
  }

  /** Sorted so that every directory precedes its contents. */
  sorted(): Array<[string, Entry]> {
    return [...this.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  get fileCount(): number {
    return [...this.entries.values()].filter((e) => e.type === 'file').length;
  }

  get bytes(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.type === 'file') n += e.size;
    return n;
  }

  /** Covers everything that ends up in the image: paths, modes, owners, sizes, mtimes, content. */
  hash(extra: string[]): string {
    const h = createHash('sha256');
    h.update(`flotilla-image-format ${FORMAT}\n`);
    for (const x of extra) h.update(`${x}\n`);
    for (const [p, e] of this.sorted()) {
      if (e.type === 'symlink') h.update(`L ${p} ${e.target}\n`);
      else if (e.type === 'directory') h.update(`D ${p} ${e.mode} ${e.uid}:${e.gid}\n`);
      else {
        h.update(`F ${p} ${e.mode} ${e.uid}:${e.gid} ${e.size} ${e.mtime.getTime()}\n`);
        if ('content' in e) h.update(e.content);
      }
    }
    return h.digest('hex');
  }

  /** Streams the tree as a tar archive; `onBytes` sees the running byte count. */
  tar(onBytes: (n: number) => void): NodeJS.ReadableStream {
    const pack = tar.pack();
    const out = new PassThrough();
    let n = 0;
    pack.on('data', (chunk: unknown) => onBytes((n += (chunk as Buffer).length)));
    pack.on('error', (err) => out.destroy(err));
    pack.pipe(out);
    void (async () => {
      for (const [p, e] of this.sorted()) {
        const name = p.slice(1);
        if (e.type === 'directory') {
          pack.entry({ name, type: 'directory', mode: e.mode, uid: e.uid, gid: e.gid, mtime: EPOCH });
        } else if (e.type === 'symlink') {
          pack.entry({ name, type: 'symlink', linkname: e.target, mode: 0o777, mtime: EPOCH });
        } else {
          const header = { name, type: 'file' as const, mode: e.mode, uid: e.uid, gid: e.gid, size: e.size, mtime: e.mtime };
          if ('content' in e) {
            pack.entry(header, e.content);
          } else {
            await new Promise<void>((resolve, reject) => {
              const sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
              const src = createReadStream(e.source);
              src.on('error', reject);
              src.pipe(sink);
            });
          }
        }
      }
      pack.finalize();
    })().catch((err: Error) => pack.destroy(err));
    return out;
  }
}

/** Shared libraries (and the loader) ldd lists for the given ELF files. */
async function sharedLibraries(files: string[]): Promise<Set<string>> {
  const libs = new Set<string>();
  await Promise.all(
    files.map(async (f) => {
      let stdout: string;
      try {
        ({ stdout } = await run('ldd', [f]));
      } catch (err) {
        // ldd exits 1 for static binaries ("not a dynamic executable"): nothing to add.
        if (/not a dynamic executable/.test(String((err as { stderr?: string }).stderr))) return;
        throw err;
      }
      for (const line of stdout.split('\n')) {
        if (/not found/.test(line)) throw new Error(`ldd ${f}: ${line.trim()}`);
        const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
        if (m) libs.add(m[1]);
      }
    }),
  );
  return libs;
}

/** Files every image shares: busybox with its applets, users, home, tmp, and the runner. */
async function baseRootFs(spec: ImageSpec, runnerFile: string): Promise<RootFs> {
  const root = new RootFs();
  for (const lib of await sharedLibraries([BUSYBOX])) await root.hostPath(lib);
  await root.hostFileAs('/bin/busybox', BUSYBOX, 0o755);
  for (const applet of APPLETS) root.symlink(`/bin/${applet}`, 'busybox');
  for (const d of ['/usr/bin', '/usr/local/bin', '/etc', '/proc', '/sys', '/dev']) root.dir(d);
  root.dir('/root', 0o700);
  root.dir('/tmp', 0o1777);
  root.dir('/home');
  root.dir('/home/work', 0o755, 1000, 1000);
  root.file('/etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nwork:x:1000:1000:work:/home/work:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  root.file('/etc/group', 'root:x:0:\nwork:x:1000:\nnogroup:x:65534:\n');
  root.file(spec.kernelspec.runner, await readFile(path.join(RUNNER_DIR, runnerFile)), 0o755);
  return root;
}

async function pythonRootFs(spec: ImageSpec): Promise<RootFs> {
  const { stdout } = await run(PYTHON, ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])']);
  if (stdout.trim() !== spec.tag) throw new Error(`${PYTHON} is Python ${stdout.trim()}, image tag says ${spec.tag}`);
  const root = await baseRootFs(spec, 'runner.py');
  await root.hostPath(PYTHON);
  root.symlink('/usr/bin/python3', 'python3.11');
  root.symlink('/usr/bin/python', 'python3.11');
  await root.hostTree(PYTHON_LIB, (name, isDir) => isDir && (STDLIB_SKIP_DIRS.has(name) || name.startsWith(STDLIB_SKIP_PREFIX)));
  const dynload = path.posix.join(PYTHON_LIB, 'lib-dynload');
  const modules = (await readdir(dynload)).filter((f) => f.endsWith('.so')).map((f) => path.posix.join(dynload, f));
  for (const lib of await sharedLibraries([PYTHON, ...modules])) await root.hostPath(lib);
  await root.hostPath(CA_FILE);
  return root;
}

async function shellRootFs(spec: ImageSpec): Promise<RootFs> {
  const { stdout } = await run(BUSYBOX, ['--help']).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
  const version = /BusyBox v(\d+\.\d+)/.exec(stdout)?.[1];
  if (version !== spec.tag) throw new Error(`${BUSYBOX} is BusyBox ${version ?? '(unknown)'}, image tag says ${spec.tag}`);
  return baseRootFs(spec, 'runner.sh');
}

const ROOTFS: Record<Kernelspec['language'], (spec: ImageSpec) => Promise<RootFs>> = {
  python: pythonRootFs,
  shell: shellRootFs,
};

const COMMANDS: Record<Kernelspec['language'], (runner: string) => string[]> = {
  python: (runner) => ['python3', '-u', runner],
  shell: (runner) => ['/bin/sh', runner],
};

/** Dockerfile instructions applied by `docker import`, label values single-quoted (kept literal). */
function importChanges(spec: ImageSpec): string[] {
  const kernelspec = JSON.stringify(spec.kernelspec);
  if (kernelspec.includes("'")) throw new Error('kernelspec must not contain a single quote');
  return [
    `LABEL ${KERNELSPEC_LABEL}='${kernelspec}'`,
    'WORKDIR /home/work',
    // The runner and the code it runs are the unprivileged work user, as in Backend.AI kernels.
    'USER work',
    'ENV PATH=/usr/local/bin:/usr/bin:/bin',
    'ENV LANG=C.UTF-8',
    // The image ships no bytecode caches and work cannot write them to /usr/lib anyway.
    ...(spec.kernelspec.language === 'python' ? ['ENV PYTHONDONTWRITEBYTECODE=1'] : []),
    `CMD ${JSON.stringify(COMMANDS[spec.kernelspec.language](spec.kernelspec.runner))}`,
  ];
}

async function inspectOrNull(docker: Dockerode, ref: string): Promise<Dockerode.ImageInspectInfo | null> {
  try {
    return await docker.getImage(ref).inspect();
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return null;
    throw err;
  }
}

/** Streams the tar to POST /images/create?fromSrc=- and returns the new image id. */
async function importTar(docker: Dockerode, spec: ImageSpec, body: NodeJS.ReadableStream, changes: string[]): Promise<string> {
  // docker-modem only pipes the body into the request, so a failing tar would leave the upload
  // hanging: abort the request instead and report the tar's error.
  const abort = new AbortController();
  let tarError: Error | undefined;
  body.on('error', (err: Error) => {
    tarError = err;
    abort.abort();
  });
  const res = await docker
    .importImage(body, { repo: spec.name, tag: spec.tag, changes, abortSignal: abort.signal })
    .catch((err: Error) => {
      throw tarError ?? err;
    });
  return new Promise<string>((resolve, reject) => {
    let status = '';
    docker.modem.followProgress(
      res,
      (err: Error | null, events: Array<{ status?: string; error?: string }>) => {
        const failed = err?.message ?? events.find((e) => e.error)?.error;
        if (failed) return reject(new Error(`docker import ${spec.name}:${spec.tag}: ${failed}`));
        for (const e of events) if (e.status?.startsWith('sha256:')) status = e.status;
        if (!status) return reject(new Error(`docker import ${spec.name}:${spec.tag}: no image id in response`));
        resolve(status);
      },
    );
  });
}

export async function buildImages(
  opts: { docker?: Dockerode; names?: string[]; force?: boolean; onProgress?: (line: string) => void } = {},
): Promise<Array<{ name: string; id: string; built: boolean; bytes: number }>> {
  const docker = opts.docker ?? new Dockerode();
  const say = opts.onProgress ?? (() => {});
  const specs = opts.names?.length
    ? opts.names.map((n) => resolveImage(n) ?? fail(`unknown kernel image: ${n}`))
    : KERNEL_IMAGES;
  const results = [];
  for (const spec of specs) {
    const started = Date.now();
    const short = spec.aliases[0] ?? spec.name;
    const ref = `${spec.name}:${spec.tag}`;
    say(`${short}: collecting files…`);
    const root = await ROOTFS[spec.kernelspec.language](spec);
    const changes = importChanges(spec);
    const hash = root.hash(changes);
    const mb = (root.bytes / 1e6).toFixed(1);
    say(`${short}: ${root.fileCount} files, ${mb} MB`);

    const existing = await inspectOrNull(docker, ref);
    let id: string;
    let built: boolean;
    if (!opts.force && existing?.Config?.Labels?.[IMAGE_HASH_LABEL] === hash) {
      id = existing.Id;
      built = false;
      say(`${short}: up to date (${ref})`);
    } else {
      // Rough total for the percentage: tar headers and padding are about 1 KB per entry.
      const estimate = root.bytes + root.entries.size * 1024;
      let shown = 0;
      const body = root.tar((n) => {
        const pct = Math.min(99, Math.floor((n / estimate) * 100));
        if (pct >= shown + 10) say(`${short}: importing… ${(shown = pct - (pct % 10))}%`);
      });
      id = await importTar(docker, spec, body, [...changes, `LABEL ${IMAGE_HASH_LABEL}=${hash}`]);
      built = true;
    }
    await docker.getImage(id).tag({ repo: spec.name, tag: 'latest' });
    // The previous build has just lost both its tags; drop it unless a container still uses it.
    if (existing && existing.Id !== id) await docker.getImage(existing.Id).remove().catch(() => {});
    const bytes = (await docker.getImage(id).inspect()).Size;
    say(`${short}: ${built ? 'done' : 'checked'} in ${((Date.now() - started) / 1000).toFixed(1)}s (${ref}, ${(bytes / 1e6).toFixed(1)} MB)`);
    results.push({ name: ref, id, built, bytes });
  }
  return results;
}

function fail(msg: string): never {
  throw new Error(msg);
}
