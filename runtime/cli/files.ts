// `flotilla upload`, `flotilla download` and `flotilla ls`: files of a session's /home/work
// through the SDK, streamed both ways. Exit codes as `flotilla session`: 0 ok, 1 the API
// answered with an error, 2 wrong usage or a local file problem.
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdir, readdir, stat, symlink, unlink, utimes } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import tar from 'tar-stream';
import type { FileEntry, UploadFile } from '../sdk/index.ts';
import { apiAction, clientFromSettings, localAction as local, LocalError } from './session.ts';

/** The regular files of the given local paths (directories walked), each with its path relative to basedir. */
export async function collect(paths: string[], basedir: string): Promise<Array<{ local: string; remote: string; size: number }>> {
  const base = path.resolve(basedir);
  const out: Array<{ local: string; remote: string; size: number }> = [];
  const visit = async (p: string): Promise<void> => {
    const st = await stat(p).catch(() => { throw new LocalError(`${p}: no such file or directory`); });
    if (st.isDirectory()) {
      for (const name of (await readdir(p)).sort()) await visit(path.join(p, name));
      return;
    }
    if (!st.isFile()) throw new LocalError(`${p}: not a regular file`);
    const rel = path.relative(base, path.resolve(p));
    if (!rel || rel.startsWith('..') || path.isAbsolute(rel)) throw new LocalError(`${p} is outside the base directory ${base} (see --basedir)`);
    out.push({ local: p, remote: rel.split(path.sep).join('/'), size: st.size });
  };
  for (const p of paths) await visit(p);
  return out;
}

/**
 * Extract a tar stream below dest, never writing outside it: entries with absolute names or
 * `..` are skipped, no entry is written through a symbolic link (an existing link in the way
 * is replaced, a link among the parents refuses the entry), hard links and devices are skipped.
 */
export async function extractTar(stream: Readable, dest: string, onEntry?: (name: string, skipped?: string) => void): Promise<number> {
  const root = path.resolve(dest);
  await mkdir(root, { recursive: true });
  const extract = tar.extract();
  stream.on('error', (err) => extract.destroy(err));
  stream.pipe(extract);
  let count = 0;
  for await (const entry of extract) {
    const h = entry.header;
    const rel = path.posix.normalize(h.name).replace(/\/+$/, '');
    const skip = (why: string) => { entry.resume(); onEntry?.(h.name, why); };
    if (!rel || rel === '.' || path.posix.isAbsolute(h.name) || rel.split('/').includes('..')) { skip('unsafe name'); continue; }
    const parts = rel.split('/');
    let parentOk = true;
    for (let i = 1; i < parts.length && parentOk; i++) {
      const dir = path.join(root, ...parts.slice(0, i));
      const st = await lstat(dir).catch(() => undefined);
      if (!st) await mkdir(dir);
      else if (!st.isDirectory()) parentOk = false; // a link or a file where a directory should be
    }
    if (!parentOk) { skip('a parent is not a directory'); continue; }
    const target = path.join(root, ...parts);
    const existing = await lstat(target).catch(() => undefined);
    if (h.type === 'directory') {
      entry.resume();
      if (existing && !existing.isDirectory()) await unlink(target);
      if (!existing?.isDirectory()) await mkdir(target, { mode: (h.mode ?? 0o755) & 0o777 });
    } else if (h.type === 'file' || h.type === 'contiguous-file') {
      if (existing?.isDirectory()) { skip('a directory is in the way'); continue; }
      if (existing) await unlink(target);
      await pipeline(entry, createWriteStream(target, { flags: 'wx', mode: (h.mode ?? 0o644) & 0o777 }));
      if (h.mtime) await utimes(target, h.mtime, h.mtime).catch(() => undefined);
    } else if (h.type === 'symlink' && h.linkname) {
      entry.resume();
      if (existing?.isDirectory()) { onEntry?.(h.name, 'a directory is in the way'); continue; }
      if (existing) await unlink(target);
      await symlink(h.linkname, target);
    } else {
      skip(`${h.type} entries are not extracted`);
      continue;
    }
    count++;
    onEntry?.(h.name);
  }
  return count;
}

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
function size(n: number): string {
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

function listing(files: FileEntry[]): string {
  const rows = files.map((f) => [f.filename, size(f.size), new Date(f.mtime * 1000).toISOString().slice(0, 19).replace('T', ' '), f.mode]);
  const header = ['FILE NAME', 'SIZE', 'MODIFIED (UTC)', 'MODE'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}

/** Add `flotilla upload`, `flotilla download` and `flotilla ls` to the program. */
export function registerFileCommands(program: Command): void {
  program.command('upload <session> <files...>')
    .description('upload local files (directories: their files) into the session\'s /home/work, at their paths relative to --basedir')
    .option('--basedir <dir>', 'local directory the remote paths are relative to', '.')
    .action(local(async (session: string, paths: string[], opts: { basedir: string }) => {
      const found = await collect(paths, opts.basedir);
      const files: UploadFile[] = found.map((f) => ({ path: f.remote, data: createReadStream(f.local) }));
      await clientFromSettings().files.upload(session, files);
      const bytes = found.reduce((n, f) => n + f.size, 0);
      console.log(`uploaded ${found.length} file${found.length === 1 ? '' : 's'} (${size(bytes)}) to ${session}:/home/work`);
    }));

  program.command('download <session> <paths...>')
    .description('download files or directories of the session\'s /home/work (paths relative to it) into a local directory')
    .option('-o, --output <dir>', 'local directory to extract into', '.')
    .action(local(async (session: string, paths: string[], opts: { output: string }) => {
      const archive = await clientFromSettings().files.download(session, paths);
      const n = await extractTar(archive, opts.output, (name, skipped) => { if (skipped) console.error(`flotilla: skipped ${name}: ${skipped}`); });
      console.log(`downloaded ${n} entr${n === 1 ? 'y' : 'ies'} into ${path.resolve(opts.output)}`);
    }));

  program.command('ls <session> [path]')
    .description('list a directory of the session\'s /home/work (default: /home/work itself)')
    .option('--json', 'print the answer as JSON')
    .action(apiAction(async (session: string, dir: string | undefined, opts: { json?: boolean }) => {
      const r = await clientFromSettings().files.listFiles(session, dir ?? '.');
      if (opts.json) return console.log(JSON.stringify(r, null, 2));
      console.log(`${r.abspath}:`);
      if (r.files.length) console.log(listing(r.files));
    }));
}
