// Virtual folders (API.md "Folders", issue 9): folders on the storage root (`vfolder.root`),
// owned by a keypair, shared with ro/rw permissions, mounted into kernels. Each folder's data
// lives at <root>/<quota scope>/<id[0:2]>/<id[2:4]>/<id> (id: the UUID's hex), so a rename moves
// nothing. Every path operation goes through vfolder-fs.ts (confined to the folder, links never
// followed). Uploads are tus 1.0: a part file <root>/.tus/<transfer id> grows with each PATCH and
// is renamed into the folder when complete; the transfer's offset is the part file's size, so
// an upload resumes after a dropped connection, through any manager sharing the root.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { constants as C } from 'node:fs';
import { chmod, mkdir, open, readdir, rename, rm, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { LiveClusterConfig } from '../../config/live.ts';
import { writeStreamAt } from '../../schema/positional-io.ts';
import { Conflict, Forbidden, InvalidAPIParameters, NotFound, PayloadTooLarge, QuotaExceeded } from '../../schema/errors.ts';
import { parseSlotAmount } from '../../schema/slots.ts';
import { fileMode } from '../agent/files.ts';
import type { Logger } from '../log.ts';
import type { Database, DbClient } from '../stores/types.ts';
import { policyOf } from './policies.ts';
import {
  at, inParent, lstatAt, moveInto, openDir, openFileForRead, ownForKernels, parseFolderPath, parseName, removeFolderDir, removeTree, usedBytes,
} from './vfolder-fs.ts';

export interface VfolderDeps {
  db: Database; config: LiveClusterConfig; log: Logger;
  /** Overrides the cluster config's `vfolder.root` (FLOTILLA_VFOLDER_ROOT). */
  root?: string;
}

export type Permission = 'ro' | 'rw' | 'wd';
export const FOLDER_NAME = /^[a-zA-Z0-9_.-]{1,64}$/;
const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
const ACCESS_KEY = /^AK[A-Z0-9]{18}$/;
const HOSTS = ['local'];
const WORK_DIR = '/home/work';

interface FolderRow {
  id: string; name: string; host: string; quota_scope: string; owner_access_key: string; usage_mode: string;
  permission: Permission; status: 'ready' | 'delete-pending' | 'deleted'; quota_bytes: string | null; cloneable: boolean;
  created_at: Date; trashed_at: Date | null; owner_email?: string;
}

/** A folder as the caller may use it: owned, or shared with them. */
export interface FolderAccess { row: FolderRow; isOwner: boolean; permission: Permission }

/** What the API answers about a folder (Backend.AI's field names). */
export interface FolderInfo {
  id: string; name: string; host: string; usage_mode: string; permission: Permission; is_owner: boolean;
  status: string; created_at: string; quota: number | null; cloneable: boolean; user: string; type: 'user';
  max_size: number | null; trashed_at: string | null;
}

export interface FolderMount { folderId: string; name: string; hostPath: string; containerPath: string; readOnly: boolean }

interface TransferRow {
  token_hash: string; id: string; kind: 'upload' | 'download'; vfolder_id: string; access_key: string; path: string;
  size: string | null; completed_at: Date | null; expires_at: Date;
}

export interface CreateFolderInput {
  name?: unknown; host?: unknown; permission?: unknown; usage_mode?: unknown; group?: unknown; quota?: unknown; cloneable?: unknown;
}

const canWrite = (p: Permission) => p === 'rw' || p === 'wd';
const hashToken = (token: string) => createHash('sha256').update(token).digest('hex');

export class VfolderService {
  /** Uploads being written by this process: a new PATCH or HEAD for one ends the old PATCH first. */
  readonly #active = new Map<string, { abort: () => void; done: Promise<void> }>();

  constructor(readonly deps: VfolderDeps) {}

  /** The storage root (absolute). */
  get root(): string {
    const r = this.deps.root || this.deps.config.get('vfolder.root');
    return path.resolve(r);
  }

  /** Where a folder's data lives: <root>/<quota scope>/<id[0:2]>/<id[2:4]>/<id>. */
  hostPath(row: Pick<FolderRow, 'id' | 'quota_scope'>): string {
    const hex = row.id.replace(/-/g, '');
    return path.join(this.root, row.quota_scope, hex.slice(0, 2), hex.slice(2, 4), hex);
  }

  #partPath(transferId: string): string { return path.join(this.root, '.tus', transferId); }

  // ---- folders

  /** Create a folder (policy's max_vfolder_count; unique name per owner). */
  async create(owner: string, input: CreateFolderInput): Promise<FolderInfo> {
    const name = validFolderName(input.name, 'name');
    if (input.host !== undefined && input.host !== null && input.host !== '' && !HOSTS.includes(String(input.host))) {
      throw new InvalidAPIParameters(`host ${JSON.stringify(input.host)}: unknown storage host (known: ${HOSTS.join(', ')})`);
    }
    if (input.group !== undefined && input.group !== null && input.group !== '') throw new InvalidAPIParameters('group folders are not supported yet: leave group out');
    const permission = input.permission ?? 'rw';
    if (permission !== 'ro' && permission !== 'rw' && permission !== 'wd') throw new InvalidAPIParameters('permission: one of ro, rw, wd');
    const usageMode = input.usage_mode ?? 'general';
    if (usageMode !== 'general' && usageMode !== 'model' && usageMode !== 'data') throw new InvalidAPIParameters('usage_mode: one of general, model, data');
    if (input.cloneable !== undefined && input.cloneable !== null && typeof input.cloneable !== 'boolean') throw new InvalidAPIParameters('cloneable: a boolean');
    const quota = parseQuota(input.quota) ?? (this.deps.config.get('vfolder.default_quota') || null);
    const id = randomUUID();

    const row = await this.deps.db.tx(async (c) => {
      const kp = (await c.query<{ user_id: string }>('SELECT user_id FROM keypairs WHERE access_key = $1 FOR UPDATE', [owner])).rows[0];
      if (!kp) throw new InvalidAPIParameters(`unknown owner ${owner}`);
      const policy = await policyOf(c, owner);
      const count = Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM vfolders WHERE owner_access_key = $1 AND status <> 'deleted'`, [owner])).rows[0].n);
      if (count >= policy.max_vfolder_count) {
        throw new QuotaExceeded(`max_vfolder_count: ${owner} has ${count} folder${count === 1 ? '' : 's'} (the trash included), the resource policy ${policy.name} allows ${policy.max_vfolder_count}`);
      }
      const clash = (await c.query<{ status: string }>(`SELECT status FROM vfolders WHERE owner_access_key = $1 AND name = $2 AND status <> 'deleted'`, [owner, name])).rows[0];
      if (clash) throw new Conflict(`a folder named ${name} already exists${clash.status === 'delete-pending' ? ' in the trash (purge or restore it)' : ''}`);
      const inserted = (await c.query<FolderRow>(
        `INSERT INTO vfolders (id, name, host, quota_scope, owner_access_key, usage_mode, permission, quota_bytes, cloneable)
         VALUES ($1, $2, 'local', $3, $4, $5, $6, $7, $8) RETURNING *`,
        [id, name, `user-${kp.user_id}`, owner, usageMode, permission, quota, input.cloneable === true])).rows[0];
      // The directory is made before the commit: a failure leaves no row without data.
      await mkdir(this.hostPath(inserted), { recursive: true, mode: 0o755 });
      await ownForKernels(this.hostPath(inserted));
      return inserted;
    });
    this.deps.log.info({ folderId: id, owner, name, quota }, 'vfolder created');
    return toInfo({ row, isOwner: true, permission: row.permission });
  }

  /** The caller's folders and those shared with them (status: ready by default, or the trash). */
  async list(owner: string, opts: { status?: 'ready' | 'delete-pending' } = {}): Promise<FolderInfo[]> {
    const status = opts.status ?? 'ready';
    const { rows } = await this.deps.db.query<FolderRow & { shared_permission: Permission | null }>(
      `SELECT v.*, NULL AS shared_permission FROM vfolders v WHERE v.owner_access_key = $1 AND v.status = $2
       UNION ALL
       SELECT v.*, p.permission AS shared_permission FROM vfolders v JOIN vfolder_permissions p ON p.vfolder_id = v.id
        WHERE p.access_key = $1 AND v.owner_access_key <> $1 AND v.status = $2
       ORDER BY created_at, id`, [owner, status]);
    return rows.map((r) => toInfo({ row: r, isOwner: r.shared_permission === null, permission: r.shared_permission ?? r.permission }));
  }

  /**
   * The folder `ref` (a name, or an id) as the caller sees it. Another tenant's folder answers
   * exactly as a missing one (404).
   */
  async resolve(owner: string, ref: string, opts: { status?: FolderRow['status'] } = {}): Promise<FolderAccess> {
    const status = opts.status ?? 'ready';
    const isId = UUID.test(ref);
    const { rows } = await this.deps.db.query<FolderRow & { shared_permission: Permission | null }>(
      `SELECT v.*, CASE WHEN v.owner_access_key = $1 THEN NULL ELSE p.permission END AS shared_permission
       FROM vfolders v LEFT JOIN vfolder_permissions p ON p.vfolder_id = v.id AND p.access_key = $1
       WHERE v.status = $3 AND (v.owner_access_key = $1 OR p.access_key IS NOT NULL)
         AND (v.name = $2 ${isId ? 'OR v.id = $4::uuid' : ''})
       ORDER BY (v.owner_access_key = $1) DESC`,
      isId ? [owner, ref, status, ref] : [owner, ref, status]);
    const byId = rows.find((r) => isId && r.id.replace(/-/g, '') === ref.replace(/-/g, '').toLowerCase());
    const own = rows.find((r) => r.shared_permission === null && r.name === ref);
    const shared = rows.filter((r) => r.shared_permission !== null && r.name === ref);
    const row = byId ?? own ?? (shared.length === 1 ? shared[0] : undefined);
    if (!row) {
      if (shared.length > 1) throw new Conflict(`${shared.length} folders named ${ref} are shared with you: name one by its id`);
      throw new NotFound(`no virtual folder ${ref}${status === 'delete-pending' ? ' in the trash' : ''}`);
    }
    return { row, isOwner: row.shared_permission === null, permission: row.shared_permission ?? row.permission };
  }

  async info(owner: string, ref: string): Promise<FolderInfo & { numFiles: number; used_bytes: number }> {
    const a = await this.resolve(owner, ref);
    const dir = this.hostPath(a.row);
    const numFiles = await readdir(dir).then((e) => e.length, () => 0);
    return { ...toInfo(a), numFiles, used_bytes: await usedBytes(dir) };
  }

  /** Move a folder to the trash (owner only); its data stays until purge. */
  async trash(owner: string, ref: string): Promise<void> {
    const a = this.#ownerOnly(await this.resolve(owner, ref), 'delete');
    await this.deps.db.query(`UPDATE vfolders SET status = 'delete-pending', trashed_at = now() WHERE id = $1 AND status = 'ready'`, [a.row.id]);
    this.deps.log.info({ folderId: a.row.id, owner, name: a.row.name }, 'vfolder moved to the trash');
  }

  /** Take a folder out of the trash (its name must be free again). */
  async restore(owner: string, ref: string): Promise<FolderInfo> {
    const a = this.#ownerOnly(await this.resolve(owner, ref, { status: 'delete-pending' }), 'restore');
    const row = await this.deps.db.tx(async (c) => {
      const clash = (await c.query(`SELECT 1 FROM vfolders WHERE owner_access_key = $1 AND name = $2 AND status = 'ready'`, [a.row.owner_access_key, a.row.name])).rowCount;
      if (clash) throw new Conflict(`a folder named ${a.row.name} exists: rename it first`);
      return (await c.query<FolderRow>(`UPDATE vfolders SET status = 'ready', trashed_at = NULL WHERE id = $1 RETURNING *`, [a.row.id])).rows[0];
    });
    this.deps.log.info({ folderId: a.row.id, owner }, 'vfolder restored from the trash');
    return toInfo({ row, isOwner: true, permission: row.permission });
  }

  /** Delete a trashed folder's data for good. */
  async purge(owner: string, ref: string): Promise<void> {
    const a = this.#ownerOnly(await this.resolve(owner, ref, { status: 'delete-pending' }), 'purge');
    await removeFolderDir(this.hostPath(a.row));
    const dropped = await this.deps.db.tx(async (c) => {
      await c.query(`UPDATE vfolders SET status = 'deleted' WHERE id = $1`, [a.row.id]);
      await c.query(`DELETE FROM vfolder_permissions WHERE vfolder_id = $1`, [a.row.id]);
      return (await c.query<TransferEnd>(`DELETE FROM vfolder_transfers WHERE vfolder_id = $1 RETURNING id, kind, completed_at`, [a.row.id])).rows;
    });
    await this.#dropPartFiles(dropped);
    this.deps.log.info({ folderId: a.row.id, owner, name: a.row.name }, 'vfolder purged');
  }

  async rename(owner: string, ref: string, newName: unknown): Promise<FolderInfo> {
    const name = validFolderName(newName, 'new_name');
    const a = this.#ownerOnly(await this.resolve(owner, ref), 'rename');
    const row = await this.deps.db.tx(async (c) => {
      const clash = (await c.query(`SELECT 1 FROM vfolders WHERE owner_access_key = $1 AND name = $2 AND status <> 'deleted' AND id <> $3`, [a.row.owner_access_key, name, a.row.id])).rowCount;
      if (clash) throw new Conflict(`a folder named ${name} already exists`);
      return (await c.query<FolderRow>(`UPDATE vfolders SET name = $2 WHERE id = $1 RETURNING *`, [a.row.id, name])).rows[0];
    });
    this.deps.log.info({ folderId: a.row.id, owner, from: a.row.name, to: name }, 'vfolder renamed');
    return toInfo({ ...a, row });
  }

  // ---- files

  async mkdir(owner: string, ref: string, rawPath: unknown, opts: { parents?: boolean; existOk?: boolean } = {}): Promise<string[]> {
    const a = this.#writable(await this.resolve(owner, ref));
    const paths = Array.isArray(rawPath) ? rawPath : [rawPath];
    if (!paths.length || paths.length > 1000) throw new InvalidAPIParameters('path: a path or a list of 1 to 1000 paths');
    const made: string[] = [];
    for (const raw of paths) {
      const segments = parseFolderPath(raw);
      await inParent(this.hostPath(a.row), segments, async (dir, name) => {
        try {
          await mkdirAt(dir, name);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !opts.existOk) throw e;
          const st = await lstatAt(dir, name);
          if (!st?.isDirectory()) throw new Conflict(`${segments.join('/')}: exists and is not a directory`);
        }
      }, { create: opts.parents === true });
      made.push(segments.join('/'));
    }
    return made;
  }

  /** A directory's entries as Backend.AI lists them (filename, size, mtime in seconds, mode). */
  async listFiles(owner: string, ref: string, rawPath: unknown): Promise<{ files: Array<{ filename: string; size: number; mtime: number; mode: string }>; folder_path: string }> {
    const a = await this.resolve(owner, ref);
    const segments = parseFolderPath(rawPath ?? '.', { allowRoot: true });
    const dir = await openDir(this.hostPath(a.row), segments);
    try {
      const files = [];
      for (const name of (await readdir(at(dir))).sort()) {
        const st = await lstatAt(dir, name);
        if (st) files.push({ filename: name, size: st.size, mtime: Math.floor(st.mtimeMs / 1000), mode: fileMode(st.mode) });
      }
      return { files, folder_path: segments.join('/') || '.' };
    } finally {
      await dir.close();
    }
  }

  async renameFile(owner: string, ref: string, targetPath: unknown, newName: unknown): Promise<void> {
    const a = this.#writable(await this.resolve(owner, ref));
    const segments = parseFolderPath(targetPath, { what: 'target_path' });
    const name = parseName(newName, 'new_name');
    await inParent(this.hostPath(a.row), segments, async (dir, old) => {
      if (!(await lstatAt(dir, old))) throw new NotFound(`${segments.join('/')}: no such file or directory in the folder`);
      if (old === name) return;
      if (await lstatAt(dir, name)) throw new Conflict(`${[...segments.slice(0, -1), name].join('/')}: already exists`);
      await rename(at(dir, old), at(dir, name));
    });
  }

  async deleteFiles(owner: string, ref: string, files: unknown, recursive: boolean): Promise<void> {
    const a = this.#writable(await this.resolve(owner, ref));
    if (!Array.isArray(files) || !files.length || files.length > 1000) throw new InvalidAPIParameters('files: a list of 1 to 1000 paths');
    const all = files.map((f) => parseFolderPath(f, { what: 'file' }));
    for (const segments of all) {
      await inParent(this.hostPath(a.row), segments, async (dir, name) => {
        const st = await lstatAt(dir, name);
        if (!st) throw new NotFound(`${segments.join('/')}: no such file or directory in the folder`);
        if (!st.isDirectory()) { await unlink(at(dir, name)); return; }
        if (recursive) await removeTree(dir, name);
        else await rmdir(at(dir, name));
      });
    }
  }

  // ---- uploads (tus 1.0) and downloads

  /** Start an upload of `size` bytes to `path`; the token authorises its PATCH and HEAD requests. */
  async requestUpload(owner: string, ref: string, rawPath: unknown, rawSize: unknown): Promise<{ token: string; id: string }> {
    const a = this.#writable(await this.resolve(owner, ref));
    const segments = parseFolderPath(rawPath);
    const size = typeof rawSize === 'string' && /^\d+$/.test(rawSize) ? Number(rawSize) : rawSize;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new InvalidAPIParameters('size: the file\'s size in bytes (a non-negative integer)');
    await this.#checkQuota(this.deps.db, a.row, size, undefined); // early, before any work
    // A directory in the way is refused now rather than at the end of the upload.
    await inParent(this.hostPath(a.row), segments, async (dir, name) => {
      if ((await lstatAt(dir, name))?.isDirectory()) throw new Conflict(`${segments.join('/')}: a directory is in the way`);
    }).catch((e) => { if (!(e instanceof NotFound)) throw e; });
    const token = randomBytes(32).toString('base64url');
    const id = randomUUID();
    await mkdir(path.dirname(this.#partPath(id)), { recursive: true, mode: 0o700 });
    await (await open(this.#partPath(id), 'wx', 0o600)).close();
    const expires = new Date(Date.now() + this.deps.config.get('vfolder.upload_expiry'));
    const reserve = (c: Database | DbClient) => c.query(
      `INSERT INTO vfolder_transfers (token_hash, id, kind, vfolder_id, access_key, path, size, expires_at) VALUES ($1, $2, 'upload', $3, $4, $5, $6, $7)`,
      [hashToken(token), id, a.row.id, owner, segments.join('/'), size, expires]);
    try {
      if (a.row.quota_bytes === null) await reserve(this.deps.db);
      // Checked again with the folder's row locked up to the reservation: uploads asked for at
      // once cannot each see room the others are taking.
      else {
        await this.deps.db.tx(async (c) => {
          await c.query(`SELECT 1 FROM vfolders WHERE id = $1 FOR UPDATE`, [a.row.id]);
          await this.#checkQuota(c, a.row, size, undefined);
          await reserve(c);
        });
      }
    } catch (e) {
      await rm(this.#partPath(id), { force: true });
      throw e;
    }
    this.deps.log.info({ folderId: a.row.id, owner, transferId: id, path: segments.join('/'), size }, 'vfolder upload requested');
    if (size === 0) await this.#complete(id, a.row, segments);
    return { token, id };
  }

  /** HEAD: how much of the upload the server has (ends a PATCH of it still running here first). */
  async uploadOffset(token: unknown): Promise<{ offset: number; size: number }> {
    const t = await this.#transfer(token, 'upload');
    await this.#takeOver(t.id);
    return { offset: await this.#offset(t), size: Number(t.size) };
  }

  /**
   * PATCH: append the body at `offset` (which must be what the server has). Streams to the part
   * file; bytes past the upload's length are refused (413) and not written; a dropped
   * connection keeps what arrived. Moves the file into the folder when complete.
   */
  async uploadChunk(token: unknown, offset: number, body: Readable, declaredLength?: number): Promise<{ offset: number; size: number }> {
    const t = await this.#transfer(token, 'upload');
    await this.#takeOver(t.id);
    const size = Number(t.size);
    const have = await this.#offset(t);
    if (offset !== have) throw new Conflict(`Upload-Offset ${offset} does not match the ${have} bytes the server has`);
    if (declaredLength !== undefined && offset + declaredLength > size) throw new PayloadTooLarge(`the chunk (${declaredLength} bytes at ${offset}) goes past the upload's length of ${size} bytes`);
    const folder = await this.#folderOf(t);
    await this.#checkQuota(this.deps.db, folder, size, t.id);
    if (t.completed_at) return { offset: size, size };

    let release!: () => void;
    const done = new Promise<void>((r) => { release = r; });
    this.#active.set(t.id, { abort: () => body.destroy(new Conflict('a newer request took this upload over')), done });
    try {
      const handle = await open(this.#partPath(t.id), C.O_WRONLY);
      try {
        // One positional writev per MiB of the body, one in flight; on a cut what arrived is kept.
        await writeStreamAt(body, handle, offset, {
          limit: size - offset,
          tooLarge: () => new PayloadTooLarge(`the body goes past the upload's length of ${size} bytes`),
          cutShort: () => Object.assign(new Error('the request body was cut short'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }),
        });
      } finally {
        await handle.close();
      }
    } catch (e) {
      const now = await this.#offset(t);
      this.deps.log.info({ transferId: t.id, offset: now, size, err: (e as Error).message }, 'vfolder upload chunk interrupted');
      throw e;
    } finally {
      this.#active.delete(t.id);
      release();
    }
    const now = await this.#offset(t);
    if (now === size) await this.#complete(t.id, folder, t.path.split('/'));
    return { offset: now, size };
  }

  /** Authorise downloading one regular file. */
  async requestDownload(owner: string, ref: string, rawPath: unknown): Promise<{ token: string }> {
    const a = await this.resolve(owner, ref);
    const segments = parseFolderPath(rawPath);
    const f = await openFileForRead(this.hostPath(a.row), segments);
    await f.handle.close();
    const token = randomBytes(32).toString('base64url');
    const expires = new Date(Date.now() + this.deps.config.get('vfolder.download_expiry'));
    await this.deps.db.query(
      `INSERT INTO vfolder_transfers (token_hash, id, kind, vfolder_id, access_key, path, expires_at) VALUES ($1, $2, 'download', $3, $4, $5, $6)`,
      [hashToken(token), randomUUID(), a.row.id, owner, segments.join('/'), expires]);
    return { token };
  }

  /** The file behind a download token, opened (links refused at open time); the caller streams and closes it. */
  async openDownload(token: unknown): Promise<{ handle: FileHandle; size: number; filename: string; mtimeMs: number }> {
    const t = await this.#transfer(token, 'download');
    const folder = await this.#folderOf(t);
    const segments = t.path.split('/');
    const f = await openFileForRead(this.hostPath(folder), segments);
    return { ...f, filename: segments[segments.length - 1] };
  }

  // ---- sharing

  /** Share with users (emails) or keypairs (access keys) at ro/rw/wd; returns who got it. */
  async share(owner: string, ref: string, targets: unknown, permission: unknown): Promise<string[]> {
    const a = this.#ownerOnly(await this.resolve(owner, ref), 'share');
    if (permission !== 'ro' && permission !== 'rw' && permission !== 'wd') throw new InvalidAPIParameters('permission: one of ro, rw, wd');
    const resolved = await this.#targets(targets, a.row.owner_access_key);
    await this.deps.db.tx(async (c) => {
      for (const { keys } of resolved) {
        for (const k of keys) {
          await c.query(`INSERT INTO vfolder_permissions (vfolder_id, access_key, permission) VALUES ($1, $2, $3)
                         ON CONFLICT (vfolder_id, access_key) DO UPDATE SET permission = EXCLUDED.permission`, [a.row.id, k, permission]);
        }
      }
    });
    this.deps.log.info({ folderId: a.row.id, owner, with: resolved.map((r) => r.target), permission }, 'vfolder shared');
    return resolved.map((r) => r.target);
  }

  async unshare(owner: string, ref: string, targets: unknown): Promise<string[]> {
    const a = this.#ownerOnly(await this.resolve(owner, ref), 'unshare');
    const resolved = await this.#targets(targets, a.row.owner_access_key);
    const keys = resolved.flatMap((r) => r.keys);
    await this.deps.db.query(`DELETE FROM vfolder_permissions WHERE vfolder_id = $1 AND access_key = ANY($2::text[])`, [a.row.id, keys]);
    this.deps.log.info({ folderId: a.row.id, owner, with: resolved.map((r) => r.target) }, 'vfolder unshared');
    return resolved.map((r) => r.target);
  }

  // ---- mounts (for the session wiring)

  /**
   * The bind mounts of a session's `mounts` and `mount_map`: folders the owner owns or has
   * shared to them, at `/home/work/<name>` unless mapped (a mapped path must be absolute and
   * below /home/work), read-only for `ro`. An unknown folder → NotFound naming it.
   */
  async resolveMounts(owner: string, mounts: string[], mountMap: Record<string, string>): Promise<FolderMount[]> {
    if (!Array.isArray(mounts) || mounts.some((m) => typeof m !== 'string')) throw new InvalidAPIParameters('mounts: a list of folder names');
    for (const k of Object.keys(mountMap ?? {})) {
      if (!mounts.includes(k)) throw new InvalidAPIParameters(`mount_map names ${k}, which is not in mounts`);
    }
    const out: FolderMount[] = [];
    const seen = new Map<string, string>();
    for (const ref of new Set(mounts)) {
      const a = await this.resolve(owner, ref);
      const mapped = mountMap?.[ref];
      let containerPath = `${WORK_DIR}/${a.row.name}`;
      if (mapped !== undefined) {
        if (typeof mapped !== 'string' || !mapped.startsWith('/') || mapped.includes('\0')) throw new InvalidAPIParameters(`mount_map.${ref}: an absolute path below ${WORK_DIR}`);
        const norm = path.posix.normalize(mapped).replace(/\/+$/, '');
        if (mapped.split('/').includes('..') || !norm.startsWith(`${WORK_DIR}/`)) throw new InvalidAPIParameters(`mount_map.${ref}: ${JSON.stringify(mapped)} is not below ${WORK_DIR}`);
        containerPath = norm;
      }
      const other = seen.get(containerPath);
      if (other) throw new InvalidAPIParameters(`folders ${other} and ${ref} would both be mounted at ${containerPath}`);
      seen.set(containerPath, ref);
      out.push({ folderId: a.row.id, name: a.row.name, hostPath: this.hostPath(a.row), containerPath, readOnly: !canWrite(a.permission) });
    }
    return out;
  }

  // ---- internals

  #ownerOnly(a: FolderAccess, what: string): FolderAccess {
    if (!a.isOwner) throw new Forbidden(`only the folder's owner may ${what} it`);
    return a;
  }

  #writable(a: FolderAccess): FolderAccess {
    if (!canWrite(a.permission)) throw new Forbidden(`the folder ${a.row.name} is read-only for you (permission ${a.permission})`);
    return a;
  }

  async #targets(raw: unknown, ownerKey: string): Promise<Array<{ target: string; keys: string[] }>> {
    if (!Array.isArray(raw) || !raw.length || raw.length > 100 || !raw.every((t) => typeof t === 'string' && t.length <= 320)) {
      throw new InvalidAPIParameters('emails: a list of 1 to 100 user emails (or access keys)');
    }
    const out: Array<{ target: string; keys: string[] }> = [];
    for (const target of new Set(raw as string[])) {
      let keys: string[];
      if (ACCESS_KEY.test(target)) {
        keys = (await this.deps.db.query<{ access_key: string }>(`SELECT access_key FROM keypairs WHERE access_key = $1`, [target])).rows.map((r) => r.access_key);
      } else {
        // Emails match whatever their case, but only one user's: two users whose emails differ
        // only in case are told apart by the exact spelling (else sharing with one reached both).
        const rows = (await this.deps.db.query<{ access_key: string; user_id: string; email: string }>(
          `SELECT k.access_key, u.id AS user_id, u.email FROM keypairs k JOIN users u ON u.id = k.user_id WHERE lower(u.email) = lower($1) AND u.status <> 'deleted'`, [target])).rows;
        const users = new Set(rows.map((r) => r.user_id));
        const exact = users.size > 1 ? rows.filter((r) => r.email === target) : rows;
        if (users.size > 1 && !exact.length) throw new InvalidAPIParameters(`${target} matches users whose emails differ only in case: give the exact email or an access key`);
        keys = exact.map((r) => r.access_key);
      }
      if (!keys.length) throw new NotFound(`no user or keypair ${target}`);
      const others = keys.filter((k) => k !== ownerKey);
      if (!others.length) throw new InvalidAPIParameters(`${target} is the folder's owner`);
      out.push({ target, keys: others });
    }
    return out;
  }

  async #transfer(token: unknown, kind: 'upload' | 'download'): Promise<TransferRow> {
    if (typeof token !== 'string' || !token || token.length > 200) throw new NotFound('no such transfer: a token is required (?token=)');
    const t = (await this.deps.db.query<TransferRow>(`SELECT * FROM vfolder_transfers WHERE token_hash = $1 AND kind = $2`, [hashToken(token), kind])).rows[0];
    if (!t || t.expires_at.getTime() < Date.now()) throw new NotFound(`no such ${kind}, or its token expired`);
    return t;
  }

  async #folderOf(t: TransferRow): Promise<FolderRow> {
    const row = (await this.deps.db.query<FolderRow>(`SELECT * FROM vfolders WHERE id = $1 AND status = 'ready'`, [t.vfolder_id])).rows[0];
    if (!row) throw new NotFound('the folder of this transfer is gone');
    if (row.owner_access_key !== t.access_key) {
      const p = (await this.deps.db.query<{ permission: Permission }>(`SELECT permission FROM vfolder_permissions WHERE vfolder_id = $1 AND access_key = $2`, [row.id, t.access_key])).rows[0];
      if (!p) throw new NotFound('the folder of this transfer is gone');
      if (t.kind === 'upload' && !canWrite(p.permission)) throw new Forbidden(`the folder ${row.name} is read-only for you now`);
    }
    return row;
  }

  async #offset(t: TransferRow): Promise<number> {
    if (t.completed_at) return Number(t.size);
    const fresh = (await this.deps.db.query<{ completed_at: Date | null }>(`SELECT completed_at FROM vfolder_transfers WHERE id = $1`, [t.id])).rows[0];
    if (fresh?.completed_at) { t.completed_at = fresh.completed_at; return Number(t.size); }
    const st = await stat(this.#partPath(t.id)).catch(() => undefined);
    if (!st) throw new NotFound('the upload\'s data is gone (expired)');
    return st.size;
  }

  /** End a PATCH of this upload still running in this process, and wait until it has let go. */
  async #takeOver(id: string): Promise<void> {
    const active = this.#active.get(id);
    if (!active) return;
    active.abort();
    await active.done;
  }

  async #complete(id: string, folder: FolderRow, segments: string[]): Promise<void> {
    await chmod(this.#partPath(id), 0o644); // the part file was private while it grew
    await moveInto(this.#partPath(id), this.hostPath(folder), segments);
    await this.deps.db.query(`UPDATE vfolder_transfers SET completed_at = now() WHERE id = $1`, [id]);
    this.deps.log.info({ folderId: folder.id, transferId: id, path: segments.join('/') }, 'vfolder upload complete');
  }

  /** Refuse an upload of `size` bytes that would take the folder past its quota (pending uploads count). */
  async #checkQuota(db: Database | DbClient, folder: FolderRow, size: number, transferId: string | undefined): Promise<void> {
    if (folder.quota_bytes === null) return;
    const quota = Number(folder.quota_bytes);
    const pending = Number((await db.query<{ n: string | null }>(
      `SELECT sum(size) AS n FROM vfolder_transfers WHERE vfolder_id = $1 AND kind = 'upload' AND completed_at IS NULL AND expires_at > now() AND id IS DISTINCT FROM $2::uuid`,
      [folder.id, transferId ?? null])).rows[0].n ?? 0);
    const used = await usedBytes(this.hostPath(folder));
    if (used + pending + size > quota) {
      throw new QuotaExceeded(`folder quota: ${folder.name} allows ${quota} bytes; ${used} are used${pending ? ` and ${pending} reserved by other uploads` : ''}, this upload needs ${size}`);
    }
  }

  /**
   * Drop expired transfers and the part files of unfinished uploads (the periodic job
   * `vfolder-transfer-sweep`, jobs.transfer_sweep). Returns how many were dropped.
   */
  async sweepExpiredTransfers(): Promise<{ dropped: number }> {
    const { rows } = await this.deps.db.query<TransferEnd>(
      `DELETE FROM vfolder_transfers WHERE expires_at < now() RETURNING id, kind, completed_at`);
    await this.#dropPartFiles(rows);
    if (rows.length) this.deps.log.info({ dropped: rows.length }, 'expired vfolder transfers dropped');
    return { dropped: rows.length };
  }

  /** The part files of unfinished uploads whose transfer rows were just deleted. */
  async #dropPartFiles(ended: readonly TransferEnd[]): Promise<void> {
    for (const r of ended) if (r.kind === 'upload' && !r.completed_at) await rm(this.#partPath(r.id), { force: true });
  }
}

/** A transfer row as deleted (RETURNING): enough to find an unfinished upload's part file. */
interface TransferEnd { id: string; kind: string; completed_at: Date | null }

async function mkdirAt(dir: FileHandle, name: string): Promise<void> {
  await mkdir(at(dir, name), 0o755);
  await ownForKernels(at(dir, name));
}

function validFolderName(raw: unknown, what: string): string {
  if (typeof raw !== 'string' || !FOLDER_NAME.test(raw) || raw === '.' || raw === '..' || UUID.test(raw)) {
    throw new InvalidAPIParameters(`${what} ${JSON.stringify(raw)}: 1 to 64 of [a-zA-Z0-9_.-], not "." or "..", not a UUID`);
  }
  return raw;
}

/** `quota`: bytes, or a size like "10g" (binary units); 0, null and absent mean none. */
function parseQuota(raw: unknown): number | null {
  if (raw === undefined || raw === null || raw === '' || raw === 0 || raw === '0') return null;
  let bytes: number;
  try { bytes = Number(parseSlotAmount('mem', raw)); } catch { throw new InvalidAPIParameters(`quota: bytes or a size like "10g", got ${JSON.stringify(raw)}`); }
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new InvalidAPIParameters(`quota: bytes or a size like "10g", got ${JSON.stringify(raw)}`);
  return bytes;
}

function toInfo(a: FolderAccess): FolderInfo {
  const r = a.row;
  const quota = r.quota_bytes === null ? null : Number(r.quota_bytes);
  return {
    id: r.id.replace(/-/g, ''), name: r.name, host: r.host, usage_mode: r.usage_mode, permission: a.permission, is_owner: a.isOwner,
    status: r.status, created_at: r.created_at.toISOString(), quota, max_size: quota, cloneable: r.cloneable,
    user: r.owner_access_key, type: 'user', trashed_at: r.trashed_at ? r.trashed_at.toISOString() : null,
  };
}

export type { DbClient };
