// File operations inside one virtual folder that never leave it. Paths are checked as strings
// first (relative, no `..`, no NUL), then every operation walks the path one component at a
// time from a descriptor of the folder's directory, opening each directory with O_NOFOLLOW and
// naming the next component through `/proc/self/fd/<fd>/<name>` (openat(2) by another name: the
// kernel resolves the magic link to the directory that descriptor holds, whatever its path has
// become). So no symbolic link is ever followed inside a folder, and code in a session that has
// the folder mounted cannot swap a directory for a link between our check and our use.
import { constants as C } from 'node:fs';
import { lchown, lstat, mkdir, open, readdir, rename, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { Conflict, FlotillaError, Forbidden, InvalidAPIParameters, NotFound } from '../../schema/errors.ts';

const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;
const MAX_PATH_CHARS = 4096;
const MAX_SEGMENT_BYTES = 255;
const MAX_DEPTH = 64;

/**
 * A user's path below a folder → its segments. Refused (InvalidAPIParameters): non-strings, NUL,
 * absolute paths, any `..`, over-long names; and, unless allowRoot, the folder itself.
 * Empty and `.` segments are dropped.
 */
export function parseFolderPath(raw: unknown, opts: { allowRoot?: boolean; what?: string } = {}): string[] {
  const what = opts.what ?? 'path';
  const refuse = (why: string): never => { throw new InvalidAPIParameters(`${what} ${JSON.stringify(raw)}: ${why}`); };
  if (typeof raw !== 'string') return refuse('must be a string');
  if (raw.length > MAX_PATH_CHARS) return refuse(`longer than ${MAX_PATH_CHARS} characters`);
  if (raw.includes('\0')) return refuse('contains a NUL byte');
  if (raw.startsWith('/') || raw.startsWith('\\')) return refuse('absolute paths are not allowed (paths are relative to the folder)');
  const segments = raw.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) return refuse('".." is not allowed in paths');
  if (segments.some((s) => Buffer.byteLength(s) > MAX_SEGMENT_BYTES)) return refuse(`a name is longer than ${MAX_SEGMENT_BYTES} bytes`);
  if (segments.length > MAX_DEPTH) return refuse(`deeper than ${MAX_DEPTH} levels`);
  if (!segments.length && !opts.allowRoot) return refuse('names the folder itself, not a file in it');
  return segments;
}

/** One name (no `/`), as rename-file's new_name. */
export function parseName(raw: unknown, what: string): string {
  if (typeof raw !== 'string' || !raw || raw === '.' || raw === '..' || raw.includes('/') || raw.includes('\0') || Buffer.byteLength(raw) > MAX_SEGMENT_BYTES) {
    throw new InvalidAPIParameters(`${what} ${JSON.stringify(raw)}: one file name (no "/", not "." or "..", at most ${MAX_SEGMENT_BYTES} bytes)`);
  }
  return raw;
}

/** `/proc/self/fd/<fd>/<name>`: a name relative to an open directory (openat(2) semantics). */
export const at = (dir: FileHandle, name?: string): string => (name === undefined ? `/proc/self/fd/${dir.fd}` : `/proc/self/fd/${dir.fd}/${name}`);

const display = (segments: readonly string[]) => segments.join('/') || '.';

/** An errno of an operation at `segments` → the API's problem. */
export function fsProblem(err: unknown, segments: readonly string[]): FlotillaError {
  if (err instanceof FlotillaError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const p = display(segments);
  switch (code) {
    case 'ENOENT': return new NotFound(`${p}: no such file or directory in the folder`);
    case 'ELOOP': return new Forbidden(`${p}: symbolic links inside a folder are not followed`);
    case 'ENOTDIR': return new InvalidAPIParameters(`${p}: a component of the path is not a directory`);
    case 'EEXIST': return new Conflict(`${p}: already exists`);
    case 'ENOTEMPTY': return new Conflict(`${p}: the directory is not empty (set recursive to delete it with its contents)`);
    case 'EISDIR': return new Conflict(`${p}: is a directory`);
    case 'ENAMETOOLONG': return new InvalidAPIParameters(`${p}: name too long`);
    default: return err as FlotillaError; // unexpected: the error handler logs it and answers 500
  }
}

/**
 * The user code in kernels runs as (`work`, uid and gid 1000 in every kernel image: see
 * images/runner): what the manager creates in a folder belongs to it, so a kernel that mounts
 * the folder can write there. Without the right to chown (a manager not running as root) the
 * files stay the manager's.
 */
export const KERNEL_UID = 1000;
export const KERNEL_GID = 1000;
export async function ownForKernels(p: string): Promise<void> {
  await lchown(p, KERNEL_UID, KERNEL_GID).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'EPERM') throw e; });
}

/**
 * Open the directory `segments` below the folder (its descriptor; the caller closes it). With
 * create, missing directories are made (mkdir -p). Refuses a symbolic link anywhere on the way.
 */
export async function openDir(folderPath: string, segments: readonly string[], opts: { create?: boolean } = {}): Promise<FileHandle> {
  let cur = await open(folderPath, DIR_FLAGS).catch((e: NodeJS.ErrnoException) => {
    throw e.code === 'ENOENT' ? new NotFound('the folder\'s directory is missing on the storage') : e;
  });
  try {
    for (let i = 0; i < segments.length; i++) {
      const name = segments[i];
      if (opts.create) {
        const made = await mkdir(at(cur, name), 0o755).then(() => true, (e: NodeJS.ErrnoException) => { if (e.code !== 'EEXIST') throw e; return false; });
        if (made) await ownForKernels(at(cur, name));
      }
      let next: FileHandle;
      try {
        next = await open(at(cur, name), DIR_FLAGS);
      } catch (e) {
        throw await whyNotDir(cur, name, segments.slice(0, i + 1), e);
      }
      await cur.close();
      cur = next;
    }
    return cur;
  } catch (e) {
    await cur.close().catch(() => undefined);
    throw fsProblem(e, segments);
  }
}

/** A directory open that failed: say whether a link or a file was in the way. */
async function whyNotDir(dir: FileHandle, name: string, segments: readonly string[], err: unknown): Promise<FlotillaError> {
  const st = await lstat(at(dir, name)).catch(() => undefined);
  if (st?.isSymbolicLink()) return new Forbidden(`${display(segments)}: is a symbolic link; links inside a folder are not followed`);
  if (st && !st.isDirectory()) return new InvalidAPIParameters(`${display(segments)}: not a directory`);
  return fsProblem(err, segments);
}

/** Run fn with the parent directory of `segments` open (created with create) and the last name. */
export async function inParent<T>(folderPath: string, segments: readonly string[], fn: (dir: FileHandle, name: string) => Promise<T>, opts: { create?: boolean } = {}): Promise<T> {
  const dir = await openDir(folderPath, segments.slice(0, -1), opts);
  try {
    return await fn(dir, segments[segments.length - 1]);
  } catch (e) {
    throw fsProblem(e, segments);
  } finally {
    await dir.close().catch(() => undefined);
  }
}

/** lstat of a name in an open directory; undefined when there is none. */
export async function lstatAt(dir: FileHandle, name: string): Promise<Stats | undefined> {
  return lstat(at(dir, name)).catch((e: NodeJS.ErrnoException) => { if (e.code === 'ENOENT') return undefined; throw e; });
}

/** Open a regular file for reading; a link or anything but a regular file is refused. */
export async function openFileForRead(folderPath: string, segments: readonly string[]): Promise<{ handle: FileHandle; size: number; mtimeMs: number }> {
  return inParent(folderPath, segments, async (dir, name) => {
    let handle: FileHandle;
    try {
      handle = await open(at(dir, name), C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw new Forbidden(`${display(segments)}: is a symbolic link; links inside a folder are not followed`);
      throw e;
    }
    const st = await handle.stat();
    if (!st.isFile()) {
      await handle.close();
      throw new InvalidAPIParameters(`${display(segments)}: not a regular file${st.isDirectory() ? ' (a directory)' : ''}`);
    }
    return { handle, size: st.size, mtimeMs: st.mtimeMs };
  });
}

/**
 * Remove `name` in an open directory with everything below it, never following a link: each
 * directory is opened with O_NOFOLLOW before its entries are removed relative to it.
 */
export async function removeTree(dir: FileHandle, name: string): Promise<void> {
  const st = await lstatAt(dir, name);
  if (!st) return;
  if (!st.isDirectory()) { await unlink(at(dir, name)).catch(ignoreMissing); return; }
  let sub: FileHandle;
  try {
    sub = await open(at(dir, name), DIR_FLAGS);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'ENOTDIR') { await unlink(at(dir, name)).catch(ignoreMissing); return; } // swapped meanwhile
    if (code === 'ENOENT') return;
    throw e;
  }
  try {
    for (const entry of await readdir(at(sub))) await removeTree(sub, entry);
  } finally {
    await sub.close();
  }
  await rmdir(at(dir, name)).catch(ignoreMissing);
}

/** Remove the folder's whole directory (purge). */
export async function removeFolderDir(folderPath: string): Promise<void> {
  const slash = folderPath.lastIndexOf('/');
  const parent = await open(folderPath.slice(0, slash) || '/', DIR_FLAGS).catch((e: NodeJS.ErrnoException) => { if (e.code === 'ENOENT') return undefined; throw e; });
  if (!parent) return;
  try { await removeTree(parent, folderPath.slice(slash + 1)); } finally { await parent.close(); }
}

/** Bytes used below an open directory (regular files' sizes; links not followed). */
export async function usedBytes(folderPath: string): Promise<number> {
  const walk = async (dir: FileHandle): Promise<number> => {
    let total = 0;
    for (const entry of await readdir(at(dir), { withFileTypes: true })) {
      if (entry.isDirectory()) {
        const sub = await open(at(dir, entry.name), DIR_FLAGS).catch(() => undefined);
        if (sub) try { total += await walk(sub); } finally { await sub.close(); }
      } else if (entry.isFile()) {
        total += (await lstatAt(dir, entry.name))?.size ?? 0;
      }
    }
    return total;
  };
  const root = await open(folderPath, DIR_FLAGS).catch(() => undefined);
  if (!root) return 0;
  try { return await walk(root); } finally { await root.close(); }
}

/** Move a file (a finished upload's part file) to `segments`, parents made as needed. */
export async function moveInto(source: string, folderPath: string, segments: readonly string[]): Promise<void> {
  await inParent(folderPath, segments, async (dir, name) => {
    const existing = await lstatAt(dir, name);
    if (existing?.isDirectory()) throw new Conflict(`${display(segments)}: a directory is in the way`);
    await ownForKernels(source);
    // rename(2) replaces an existing file or link itself; it never writes through a link.
    await rename(source, at(dir, name));
  }, { create: true });
}

function ignoreMissing(e: NodeJS.ErrnoException): void { if (e.code !== 'ENOENT') throw e; }
