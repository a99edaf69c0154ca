// The agent's side of file transfer (schema/file-rpc.ts): uploads are spooled to a temporary
// file on this host chunk by chunk, then put into the container as one tar archive (entries
// owned by the work user, 1000:1000); downloads are archived from the container into a spool
// file, which the manager then reads chunk by chunk; listings run `stat` in the container as
// the work user.
//
// Confinement: every path is relative to /home/work (parseWorkPath), and each of its
// components is looked at in the container (Docker's path stat) at the time of the operation:
// a symbolic link whose target, fully resolved, is outside /home/work is refused. So that
// nothing in the container can swap a directory for such a link between the check and the
// archive operation, the container is paused from the check until Docker has finished with
// the archive (for an upload: extracted it; for a download: produced it into the spool file).
// Docker extracts and archives as root inside the container's root filesystem, which is why
// the check matters; a listing runs as the work user and cannot reach more than the user can.
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, rm, stat, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type Docker from 'dockerode';
import tar from 'tar-stream';
import {
  checkDownloadBegin, checkDownloadRead, checkDownloadRef, checkListFiles, checkUploadBegin, checkUploadChunk, checkUploadRef,
  FileRpcError, parseWorkPath, workAbsPath, WORK_DIR,
  type FileEntry, type FileRpcName, type FileRpcs,
} from '../../schema/file-rpc.ts';
import type { Logger } from '../log.ts';
import { containerName, type DockerBackend } from './docker.ts';

/** Where uploads and downloads are spooled on the agent's host (one fresh directory per transfer). */
export const SPOOL_ROOT = join(tmpdir(), 'flotilla-spool');
/** A transfer nobody touched for this long is dropped with its spool files (the manager went away). */
export const TRANSFER_IDLE_MS = 10 * 60_000;
const WORK_UID = 1000;
const WORK_GID = 1000;
/** Listing output larger than this is refused (a directory of some hundred thousand entries). */
const MAX_LISTING_BYTES = 32 * 1024 * 1024;

interface SpoolFile { path: string; segments: string[]; spool: string; size: number; handle?: FileHandle }
interface Upload { kind: 'upload'; id: string; kernelId: string; dir: string; maxBytes: number; bytes: number; files: SpoolFile[]; touched: number; busy: boolean }
interface Download { kind: 'download'; id: string; kernelId: string; dir: string; size: number; handle: FileHandle; touched: number }

/** Docker's path stat (`X-Docker-Container-Path-Stat`): mode is a Go FileMode. */
interface PathStat { name: string; size: number; mode: number; mtime: string; linkTarget: string }
type Kind = 'dir' | 'file' | 'other' | 'dangling';
const GO_MODE_DIR = 2 ** 31;
const GO_MODE_SYMLINK = 2 ** 27;
/** Go's file type bits: directory, symlink, device, named pipe, socket, char device, irregular. */
const GO_TYPE_BITS = [31, 27, 26, 25, 24, 21, 19].map((b) => 2 ** b);
/** A paused section longer than this is cut short (the container is unpaused, loudly). */
const FROZEN_MAX_MS = 10 * 60_000;
const goBit = (mode: number, bit: number) => Math.floor(mode / bit) % 2 === 1;
const isInsideWork = (p: string) => p === WORK_DIR || p.startsWith(`${WORK_DIR}/`);
const statusOf = (e: unknown) => (e as { statusCode?: number }).statusCode;

/**
 * The file RPC handlers, to be spread into the agent's handler table. Each validates its
 * request and throws FileRpcError (with the code the manager maps) for what the user got wrong.
 */
export function fileRpcHandlers(backend: DockerBackend, log: Logger): Record<FileRpcName, (req: unknown) => Promise<unknown>> {
  const transfers = new Map<string, Upload | Download>();
  const locks = new Map<string, Promise<unknown>>();
  const flog = log.child({ part: 'files' });

  /** One paused section at a time per kernel (two would unpause each other's container). */
  const serial = <T>(kernelId: string, fn: () => Promise<T>): Promise<T> => {
    const prev = locks.get(kernelId) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    locks.set(kernelId, next);
    void next.finally(() => { if (locks.get(kernelId) === next) locks.delete(kernelId); }).catch(() => undefined);
    return next;
  };

  const container = async (kernelId: string): Promise<Docker.Container> => {
    const c = backend.docker.getContainer(containerName(kernelId));
    let info: Docker.ContainerInspectInfo;
    try {
      info = await c.inspect();
    } catch (e) {
      if (statusOf(e) === 404) throw new FileRpcError('kernel-not-running', `kernel ${kernelId} has no container here`);
      throw e;
    }
    if (!info.State.Running) throw new FileRpcError('kernel-not-running', `the container of kernel ${kernelId} is not running`);
    return c;
  };

  /** Run fn with the container paused: nothing in it can change the paths fn checks and uses. */
  const frozen = async <T>(c: Docker.Container, fn: () => Promise<T>): Promise<T> => {
    try {
      await c.pause();
    } catch (e) {
      if (statusOf(e) === 409) throw new FileRpcError('kernel-not-running', `the container cannot be paused for the transfer: ${(e as Error).message}`);
      throw e;
    }
    const guard = setTimeout(() => {
      flog.error({ containerId: c.id }, `a transfer kept the container paused for ${FROZEN_MAX_MS} ms: unpausing it`);
      void unpause(c);
    }, FROZEN_MAX_MS);
    try {
      return await fn();
    } finally {
      clearTimeout(guard);
      await unpause(c);
    }
  };

  const unpause = async (c: Docker.Container): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      try {
        await c.unpause();
        return;
      } catch (e) {
        // 409: not paused (any more), or gone meanwhile: nothing to undo.
        if (statusOf(e) === 409 || statusOf(e) === 404) return;
        if (attempt >= 5) { flog.error({ containerId: c.id, err: (e as Error).message }, 'container left paused'); return; }
        await new Promise((r) => setTimeout(r, 200 * attempt));
      }
    }
  };

  const statPath = async (c: Docker.Container, p: string): Promise<PathStat | undefined> => {
    try {
      const res = await c.infoArchive({ path: p }) as unknown as Readable & { headers: Record<string, string | undefined> };
      res.resume();
      const raw = res.headers['x-docker-container-path-stat'];
      if (!raw) throw new Error(`no path stat for ${p}`);
      return JSON.parse(Buffer.from(raw, 'base64').toString('utf8')) as PathStat;
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw e;
    }
  };

  const kindOf = (st: PathStat): Kind => (goBit(st.mode, GO_MODE_DIR) ? 'dir' : GO_TYPE_BITS.some((b) => goBit(st.mode, b)) ? 'other' : 'file');

  /**
   * Walk the path's components in the container: how many of them exist, and what the last
   * existing one is (symbolic links followed). A link leading outside /home/work is refused;
   * so is going through something that is not a directory.
   */
  const inspectPath = async (c: Docker.Container, segments: string[]): Promise<{ existing: number; kind: Kind }> => {
    const root = await statPath(c, WORK_DIR);
    if (!root || goBit(root.mode, GO_MODE_SYMLINK) || kindOf(root) !== 'dir') throw new FileRpcError('not-found', `${WORK_DIR} is not a directory in the container`);
    let kind: Kind = 'dir';
    for (let i = 0; i < segments.length; i++) {
      const rel = segments.slice(0, i + 1).join('/');
      const st = await statPath(c, workAbsPath(segments.slice(0, i + 1)));
      if (!st) return { existing: i, kind };
      if (goBit(st.mode, GO_MODE_SYMLINK)) {
        // Docker reports the link's target fully resolved within the container's root.
        const target = st.linkTarget;
        if (!target || !isInsideWork(target)) throw new FileRpcError('invalid-path', `${rel} is a symbolic link that leads outside ${WORK_DIR}`);
        const resolved = await statPath(c, target);
        kind = resolved ? kindOf(resolved) : 'dangling';
      } else {
        kind = kindOf(st);
      }
      if (i < segments.length - 1 && kind !== 'dir') {
        throw new FileRpcError(kind === 'dangling' ? 'not-found' : 'not-a-directory', `${rel} is not a directory`);
      }
    }
    return { existing: segments.length, kind };
  };

  const newTransferId = () => randomBytes(12).toString('base64url');

  const dropTransfer = async (id: string): Promise<boolean> => {
    const t = transfers.get(id);
    if (!t) return false;
    transfers.delete(id);
    if (t.kind === 'upload') for (const f of t.files) await f.handle?.close().catch(() => undefined);
    else await t.handle.close().catch(() => undefined);
    await rm(t.dir, { recursive: true, force: true }).catch((err) => flog.warn({ err: (err as Error).message, dir: t.dir }, 'spool directory not removed'));
    return true;
  };

  const getUpload = (id: string): Upload => {
    const t = transfers.get(id);
    if (!t || t.kind !== 'upload') throw new FileRpcError('unknown-transfer', `no upload ${id} on this agent (finished, aborted or expired)`);
    t.touched = Date.now();
    return t;
  };
  const getDownload = (id: string): Download => {
    const t = transfers.get(id);
    if (!t || t.kind !== 'download') throw new FileRpcError('unknown-transfer', `no download ${id} on this agent (closed or expired)`);
    t.touched = Date.now();
    return t;
  };

  const spoolDir = async (): Promise<string> => {
    await mkdir(SPOOL_ROOT, { recursive: true, mode: 0o700 });
    return mkdtemp(join(SPOOL_ROOT, 'x-'));
  };

  // Transfers the manager abandoned (it crashed, or lost the agent) are dropped after a while.
  const reaper = setInterval(() => {
    const now = Date.now();
    for (const t of transfers.values()) {
      if (now - t.touched > TRANSFER_IDLE_MS && !(t.kind === 'upload' && t.busy)) {
        flog.warn({ transferId: t.id, kernelId: t.kernelId, kind: t.kind }, 'idle transfer dropped');
        void dropTransfer(t.id);
      }
    }
  }, Math.min(TRANSFER_IDLE_MS, 60_000));
  reaper.unref();

  // Housekeeping at start: spool directories an earlier agent process left (it died mid-transfer),
  // and containers of this agent it left paused.
  void (async () => {
    try {
      for (const name of await readdir(SPOOL_ROOT).catch(() => [] as string[])) {
        const p = join(SPOOL_ROOT, name);
        const st = await stat(p).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs > 2 * TRANSFER_IDLE_MS) await rm(p, { recursive: true, force: true }).catch(() => undefined);
      }
      for (const k of await backend.listContainers()) {
        const c = backend.docker.getContainer(k.containerId);
        if ((await c.inspect().catch(() => undefined))?.State.Paused) {
          flog.warn({ kernelId: k.kernelId }, 'unpausing a container left paused by an interrupted transfer');
          await unpause(c);
        }
      }
    } catch (err) {
      flog.warn({ err: (err as Error).message }, 'file transfer housekeeping failed');
    }
  })();

  const handlers: { [N in FileRpcName]: (req: unknown) => Promise<FileRpcs[N]['res']> } = {
    uploadBegin: async (req) => {
      if (!checkUploadBegin.Check(req)) throw new Error('invalid uploadBegin request');
      await container(req.kernelId);
      const id = newTransferId();
      transfers.set(id, { kind: 'upload', id, kernelId: req.kernelId, dir: await spoolDir(), maxBytes: req.maxBytes, bytes: 0, files: [], touched: Date.now(), busy: false });
      return { uploadId: id };
    },

    uploadChunk: async (req) => {
      if (!checkUploadChunk.Check(req)) throw new Error('invalid uploadChunk request');
      const up = getUpload(req.uploadId);
      if (up.busy) throw new Error(`upload ${up.id} is busy (chunks must wait for the previous acknowledgement)`);
      up.busy = true;
      try {
        let f = up.files[req.file];
        if (!f) {
          if (req.file !== up.files.length) throw new Error(`upload ${up.id}: file ${req.file} out of order (expected ${up.files.length})`);
          const segments = parseWorkPath(req.path, { file: true });
          // Early refusal of a path through a link that leads out, before its bytes are spooled
          // (the check that counts is the one at commit, with the container paused).
          // Unpaused, a path changing meanwhile can confuse Docker's stat: only a clear refusal counts here.
          await inspectPath(await container(up.kernelId), segments).catch((e: unknown) => {
            if (e instanceof FileRpcError && e.code === 'invalid-path') throw e;
          });
          const spool = join(up.dir, String(req.file));
          f = { path: req.path, segments, spool, size: 0, handle: await open(spool, 'wx', 0o600) };
          up.files.push(f);
        } else if (f.path !== req.path || req.file !== up.files.length - 1) {
          throw new Error(`upload ${up.id}: chunk for file ${req.file} does not continue it`);
        }
        if (req.offset + req.data.length <= f.size) return { received: up.bytes }; // a repeated chunk
        if (req.offset !== f.size) throw new Error(`upload ${up.id}: chunk at offset ${req.offset}, expected ${f.size}`);
        if (up.bytes + req.data.length > up.maxBytes) {
          await dropTransfer(up.id);
          throw new FileRpcError('payload-too-large', `the upload exceeds ${up.maxBytes} bytes`);
        }
        if (req.data.length) await f.handle!.write(req.data, 0, req.data.length, req.offset);
        f.size += req.data.length;
        up.bytes += req.data.length;
        return { received: up.bytes };
      } finally {
        up.busy = false;
      }
    },

    uploadCommit: async (req) => {
      if (!checkUploadRef.Check(req)) throw new Error('invalid uploadCommit request');
      const up = getUpload(req.uploadId);
      if (up.busy) throw new Error(`upload ${up.id} is busy`);
      up.busy = true;
      try {
        for (const f of up.files) { await f.handle?.close(); f.handle = undefined; }
        // Later files of the same path replace earlier ones, as they would on a disk.
        const byPath = new Map<string, SpoolFile>();
        for (const f of up.files) byPath.set(f.segments.join('/'), f);
        const files = [...byPath.values()];
        await serial(up.kernelId, async () => {
          const c = await container(up.kernelId);
          await frozen(c, async () => {
            const dirs = new Set<string>();
            for (const f of files) {
              const { existing, kind } = await inspectPath(c, f.segments);
              const rel = f.segments.join('/');
              if (existing === f.segments.length && kind === 'dir') throw new FileRpcError('is-a-directory', `${rel} is a directory`);
              for (let k = existing; k < f.segments.length - 1; k++) dirs.add(f.segments.slice(0, k + 1).join('/'));
            }
            const clash = files.find((f) => dirs.has(f.segments.join('/')));
            if (clash) throw new FileRpcError('invalid-path', `${clash.segments.join('/')} is both a file and a directory in this upload`);
            await putArchive(c, [...dirs].sort((a, b) => a.split('/').length - b.split('/').length), files);
          });
        });
        flog.info({ kernelId: up.kernelId, files: files.length, bytes: up.bytes }, 'files uploaded');
        return { files: files.length, bytes: up.bytes };
      } finally {
        await dropTransfer(up.id);
      }
    },

    uploadAbort: async (req) => {
      if (!checkUploadRef.Check(req)) throw new Error('invalid uploadAbort request');
      const t = transfers.get(req.uploadId);
      if (t?.kind === 'upload' && t.busy) {
        // A commit in progress finishes (and cleans up) on its own; a chunk write is short.
        await new Promise((r) => setTimeout(r, 50));
      }
      return { aborted: await dropTransfer(req.uploadId) };
    },

    downloadBegin: async (req) => {
      if (!checkDownloadBegin.Check(req)) throw new Error('invalid downloadBegin request');
      const paths = req.paths.map((p) => parseWorkPath(p, { allowRoot: true }));
      const dir = await spoolDir();
      const file = join(dir, 'download.tar');
      try {
        await serial(req.kernelId, async () => {
          const c = await container(req.kernelId);
          await frozen(c, async () => {
            for (const segments of paths) {
              const { existing } = await inspectPath(c, segments);
              if (existing < segments.length) throw new FileRpcError('not-found', `${segments.join('/')}: no such file or directory`);
            }
            await archiveInto(c, paths.map(workAbsPath), file);
          });
        });
        const handle = await open(file, 'r');
        const size = (await handle.stat()).size;
        const id = newTransferId();
        transfers.set(id, { kind: 'download', id, kernelId: req.kernelId, dir, size, handle, touched: Date.now() });
        return { downloadId: id, size };
      } catch (e) {
        await rm(dir, { recursive: true, force: true }).catch(() => undefined);
        throw e;
      }
    },

    downloadRead: async (req) => {
      if (!checkDownloadRead.Check(req)) throw new Error('invalid downloadRead request');
      const d = getDownload(req.downloadId);
      const want = Math.max(0, Math.min(req.maxBytes, d.size - req.offset));
      const buf = Buffer.allocUnsafe(want);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await d.handle.read(buf, got, want - got, req.offset + got);
        if (!bytesRead) break;
        got += bytesRead;
      }
      return { data: got === want ? buf : buf.subarray(0, got), eof: req.offset + got >= d.size };
    },

    downloadClose: async (req) => {
      if (!checkDownloadRef.Check(req)) throw new Error('invalid downloadClose request');
      return { closed: await dropTransfer(req.downloadId) };
    },

    listFiles: async (req) => {
      if (!checkListFiles.Check(req)) throw new Error('invalid listFiles request');
      const segments = parseWorkPath(req.path, { allowRoot: true });
      const rel = segments.join('/') || '.';
      // In turn with the paused sections (exec fails in a paused container).
      const out = await serial(req.kernelId, async () => {
        const c = await container(req.kernelId);
        const { existing, kind } = await inspectPath(c, segments);
        if (existing < segments.length) throw new FileRpcError('not-found', `${rel}: no such file or directory`);
        if (kind !== 'dir') throw new FileRpcError('not-a-directory', `${rel} is not a directory`);
        // As the work user: whatever a link swapped in meanwhile shows, the user could list it anyway.
        return execAsWorkUser(c, ['sh', '-c', LIST_SCRIPT, 'sh', workAbsPath(segments)]);
      });
      if (out.exitCode !== 0) {
        throw new FileRpcError(out.exitCode === 3 ? 'not-a-directory' : 'not-found', `${rel}: cannot list it (${out.stderr.trim() || `exit code ${out.exitCode}`})`);
      }
      return { files: parseListing(out.stdout), abspath: workAbsPath(segments) };
    },
  };
  return handlers;
}

/** Put the upload into the container: one tar, directories first, at /home/work. */
async function putArchive(c: Docker.Container, dirs: string[], files: SpoolFile[]): Promise<void> {
  const pack = tar.pack();
  const body = new PassThrough();
  pack.on('error', (err) => body.destroy(err));
  pack.pipe(body);
  const now = new Date();
  const feeding = (async () => {
    for (const d of dirs) pack.entry({ name: d, type: 'directory', mode: 0o755, uid: WORK_UID, gid: WORK_GID, mtime: now });
    for (const f of files) {
      await new Promise<void>((resolve, reject) => {
        const sink = pack.entry({ name: f.segments.join('/'), type: 'file', mode: 0o644, uid: WORK_UID, gid: WORK_GID, size: f.size, mtime: now },
          (err) => (err ? reject(err) : resolve()));
        const src = createReadStream(f.spool);
        src.on('error', (err) => { sink.destroy(err); reject(err); });
        src.pipe(sink);
      });
    }
    pack.finalize();
  })();
  feeding.catch((err: Error) => pack.destroy(err));
  try {
    // noOverwriteDirNonDir: a file never replaces a directory (checked already; Docker checks again).
    await Promise.all([c.putArchive(body, { path: WORK_DIR, noOverwriteDirNonDir: true }), feeding]);
  } catch (e) {
    pack.destroy();
    body.destroy();
    const status = statusOf(e);
    if (status === 400 || status === 403) throw new FileRpcError('invalid-path', `the container refused the files: ${(e as Error).message}`);
    throw e;
  }
}

/**
 * Archive the given container paths into one tar file on this host. Each path's entries are
 * named as Docker names them (the path's last component, then what is below it), like
 * `docker cp` and Backend.AI's download.
 */
async function archiveInto(c: Docker.Container, paths: string[], file: string): Promise<void> {
  const pack = tar.pack();
  const out = createWriteStream(file, { mode: 0o600 });
  pack.pipe(out);
  const written = finished(out);
  try {
    for (const p of paths) {
      const src = await c.getArchive({ path: p }) as unknown as Readable;
      await copyEntries(src, pack);
    }
    pack.finalize();
    await written;
  } catch (e) {
    pack.destroy();
    out.destroy();
    await written.catch(() => undefined);
    if (statusOf(e) === 404) throw new FileRpcError('not-found', `no such file or directory: ${(e as Error).message}`);
    throw e;
  }
}

/** Re-pack every entry of a tar stream into pack (stream to stream, nothing held whole). */
async function copyEntries(src: Readable, pack: tar.Pack): Promise<void> {
  const extract = tar.extract();
  src.on('error', (err) => extract.destroy(err));
  src.pipe(extract);
  for await (const entry of extract) {
    const header = { ...entry.header };
    if (header.type === 'file' || header.type === 'contiguous-file') {
      await new Promise<void>((resolve, reject) => {
        const sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
        entry.on('error', (err: Error) => { sink.destroy(err); reject(err); });
        entry.pipe(sink);
      });
    } else {
      entry.resume();
      await new Promise<void>((resolve, reject) => pack.entry(header, (err) => (err ? reject(err) : resolve())));
    }
  }
}

// Lists the directory's entries (dot files included, links not followed), one record each:
// "<size> <mtime> <raw mode in hex>\n<name>\0". Exit code 3: not a directory we can enter.
const LIST_SCRIPT = `cd -- "$1" 2>/dev/null || exit 3
for f in * .[!.]* ..?*; do
  if [ -e "$f" ] || [ -L "$f" ]; then
    s=$(stat -c '%s %Y %f' -- "$f" 2>/dev/null) && printf '%s\\n%s\\0' "$s" "$f"
  fi
done
exit 0`;

function parseListing(stdout: Buffer): FileEntry[] {
  const entries: FileEntry[] = [];
  for (const record of stdout.toString('utf8').split('\0')) {
    const nl = record.indexOf('\n');
    if (nl < 0) continue;
    const [size, mtime, rawMode] = record.slice(0, nl).split(' ');
    const filename = record.slice(nl + 1);
    const mode = parseInt(rawMode, 16);
    if (!filename || !Number.isFinite(mode)) continue;
    entries.push({ filename, size: Number(size) || 0, mtime: Number(mtime) || 0, mode: fileMode(mode) });
  }
  return entries.sort((a, b) => (a.filename < b.filename ? -1 : a.filename > b.filename ? 1 : 0));
}

/** A POSIX st_mode as `ls -l` (and Python's stat.filemode) writes it. */
export function fileMode(mode: number): string {
  const type = ({ 0o140000: 's', 0o120000: 'l', 0o100000: '-', 0o060000: 'b', 0o040000: 'd', 0o020000: 'c', 0o010000: 'p' } as Record<number, string>)[mode & 0o170000] ?? '?';
  const bit = (mask: number, ch: string) => (mode & mask ? ch : '-');
  const special = (exec: number, flag: number, set: string, unset: string) =>
    (mode & flag ? (mode & exec ? set : unset) : mode & exec ? 'x' : '-');
  return type
    + bit(0o400, 'r') + bit(0o200, 'w') + special(0o100, 0o4000, 's', 'S')
    + bit(0o040, 'r') + bit(0o020, 'w') + special(0o010, 0o2000, 's', 'S')
    + bit(0o004, 'r') + bit(0o002, 'w') + special(0o001, 0o1000, 't', 'T');
}

/** Run a command in the container as the work user; stdout bounded by MAX_LISTING_BYTES. */
async function execAsWorkUser(c: Docker.Container, cmd: string[]): Promise<{ exitCode: number; stdout: Buffer; stderr: string }> {
  const exec = await c.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true, User: `${WORK_UID}:${WORK_GID}`, WorkingDir: WORK_DIR });
  const stream = await exec.start({ hijack: true, stdin: false });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let outBytes = 0;
  let tooBig = false;
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.on('data', (b: Buffer) => {
    outBytes += b.length;
    if (outBytes > MAX_LISTING_BYTES) { tooBig = true; stream.destroy(); return; }
    out.push(b);
  });
  stderr.on('data', (b: Buffer) => { if (err.length < 64) err.push(b); });
  c.modem.demuxStream(stream, stdout, stderr);
  await new Promise<void>((resolve, reject) => {
    stream.on('end', resolve);
    stream.on('close', resolve);
    stream.on('error', (e: Error) => (tooBig ? resolve() : reject(e)));
  });
  stdout.end();
  stderr.end();
  await Promise.all([finished(stdout), finished(stderr)]);
  if (tooBig) throw new FileRpcError('invalid-path', `the directory listing is larger than ${MAX_LISTING_BYTES} bytes`);
  // The exit code lands a moment after the output ends.
  let info = await exec.inspect();
  for (let i = 0; info.Running && i < 50; i++) {
    await new Promise((r) => setTimeout(r, 20));
    info = await exec.inspect();
  }
  return { exitCode: info.ExitCode ?? -1, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') };
}
