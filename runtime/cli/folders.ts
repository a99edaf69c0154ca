// `flotilla folder create|ls|rm|upload|download|files|share` (issue 9), through the SDK's
// `client.folders`. Exit codes as `flotilla session`: 0 ok, 1 the API answered with an error,
// 2 wrong usage or a local file problem.
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { NotFound } from '../../schema/errors.ts';
import type { FolderPermission } from '../sdk/folders.ts';
import { collect } from './files.ts';
import { apiAction, clientFromSettings, localAction as local, LocalError, table } from './session.ts';

const permission = (p: string): FolderPermission => {
  if (p !== 'ro' && p !== 'rw' && p !== 'wd') throw new LocalError(`--permission: one of ro, rw, wd (got ${p})`);
  return p;
};

export function registerFolderCommands(program: Command): void {
  const folder = program.command('folder').description('virtual folders: create, list, remove, upload, download, files, share');

  folder.command('create <name>')
    .description('create a virtual folder')
    .option('--quota <size>', 'size quota, bytes or e.g. 10g')
    .option('--permission <perm>', 'your own permission: ro, rw or wd', 'rw')
    .option('--usage-mode <mode>', 'general, model or data', 'general')
    .action(local(async (name: string, o: { quota?: string; permission: string; usageMode: 'general' | 'model' | 'data' }) => {
      const f = await clientFromSettings().folders.create(name, { quota: o.quota, permission: permission(o.permission), usageMode: o.usageMode });
      console.log(`Virtual folder "${f.name}" is created (id ${f.id}).`);
    }));

  folder.command('ls')
    .description('list your folders and those shared with you')
    .option('--trash', 'list your folders in the trash instead')
    .option('--json', 'print the answer as JSON')
    .action(apiAction(async (o: { trash?: boolean; json?: boolean }) => {
      const list = await clientFromSettings().folders.list({ trash: o.trash });
      if (o.json) return console.log(JSON.stringify(list, null, 2));
      console.log(table(['NAME', 'ID', 'PERMISSION', 'OWNER', 'QUOTA', 'STATUS'],
        list.map((f) => [f.name, f.id, f.permission, f.is_owner ? 'you' : f.user, f.quota === null ? '-' : String(f.quota), f.status])));
    }));

  folder.command('rm <name>')
    .description('move a folder to the trash (--purge: then delete its data for good)')
    .option('--purge', 'also purge it')
    .action(apiAction(async (name: string, o: { purge?: boolean }) => {
      const client = clientFromSettings();
      try {
        await client.folders.delete(name);
      } catch (err) {
        // Already in the trash: --purge is exactly what the previous rm told the user to run.
        if (!(o.purge && err instanceof NotFound)) throw err;
      }
      if (o.purge) await client.folders.purge(name);
      console.log(o.purge ? `Virtual folder "${name}" is deleted.` : `Virtual folder "${name}" is in the trash (flotilla folder rm --purge ${name}, or flotilla folder restore ${name}).`);
    }));

  folder.command('restore <name>')
    .description('take a folder out of the trash')
    .action(apiAction(async (name: string) => {
      await clientFromSettings().folders.restore(name);
      console.log(`Virtual folder "${name}" is restored.`);
    }));

  folder.command('upload <name> <files...>')
    .description('upload local files (directories: their files) into the folder, at their paths relative to --basedir (resumable)')
    .option('--basedir <dir>', 'local directory the remote paths are relative to', '.')
    .action(local(async (name: string, paths: string[], o: { basedir: string }) => {
      const client = clientFromSettings();
      for (const f of await collect(paths, o.basedir)) {
        await client.folders.upload(name, f.remote, f.local);
        console.log(`uploaded ${f.remote}`);
      }
    }));

  folder.command('download <name> <paths...>')
    .description('download files of the folder into a local directory (same relative paths)')
    .option('-o, --output <dir>', 'local directory', '.')
    .action(local(async (name: string, paths: string[], o: { output: string }) => {
      const client = clientFromSettings();
      const root = path.resolve(o.output);
      for (const p of paths) {
        const rel = path.posix.normalize(p).replace(/^\/+/, '');
        if (!rel || rel === '.' || rel.split('/').includes('..')) throw new LocalError(`${p}: not a path inside the folder`);
        const dest = path.join(root, ...rel.split('/'));
        await mkdir(path.dirname(dest), { recursive: true });
        await pipeline(await client.folders.download(name, rel), createWriteStream(dest));
        console.log(`downloaded ${rel} → ${dest}`);
      }
    }));

  folder.command('files <name> [path]')
    .description('list a directory of the folder (default: its top)')
    .option('--json', 'print the answer as JSON')
    .action(apiAction(async (name: string, dir: string | undefined, o: { json?: boolean }) => {
      const files = await clientFromSettings().folders.listFiles(name, dir ?? '.');
      if (o.json) return console.log(JSON.stringify(files, null, 2));
      console.log(table(['FILE NAME', 'SIZE', 'MODIFIED (UTC)', 'MODE'],
        files.map((f) => [f.filename, String(f.size), new Date(f.mtime * 1000).toISOString().slice(0, 19).replace('T', ' '), f.mode])));
    }));

  folder.command('share <name> <users...>')
    .description('share the folder with users (emails) or keypairs (access keys); --revoke stops sharing')
    .option('--permission <perm>', 'ro, rw or wd', 'rw')
    .option('--revoke', 'stop sharing with them instead')
    .action(local(async (name: string, users: string[], o: { permission: string; revoke?: boolean }) => {
      const client = clientFromSettings();
      if (o.revoke) console.log(`no longer shared with: ${(await client.folders.unshare(name, users)).join(', ')}`);
      else console.log(`shared (${o.permission}) with: ${(await client.folders.share(name, users, permission(o.permission))).join(', ')}`);
    }));
}
