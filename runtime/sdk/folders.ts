// Folder routes (`/folders...`, API.md "Folders"), as `client.folders`. Uploads use tus 1.0
// (request-upload, then HEAD/PATCH with Upload-Offset) and resume by themselves after a dropped
// connection; downloads come back as a stream. Neither holds a file in memory.
import { open, stat, type FileHandle } from 'node:fs/promises';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { sendFileRange, writeStreamAt } from '../../schema/positional-io.ts';
import { errorFromProblem, type ProblemBody } from '../../schema/errors.ts';
import type { Client } from './client.ts';
import type { FileEntry } from './files.ts';

export type FolderPermission = 'ro' | 'rw' | 'wd';

/** A folder as the API describes it (Backend.AI's field names). */
export interface FolderInfo {
  /** The folder's UUID as 32 hex digits. */
  id: string;
  name: string;
  host: string;
  usage_mode: 'general' | 'model' | 'data';
  /** The caller's permission: the owner's is the folder's own, a share's is what it was shared with. */
  permission: FolderPermission;
  is_owner: boolean;
  /** `ready`, or `delete-pending` in the trash. */
  status: string;
  created_at: string;
  /** Size quota in bytes; null: none. */
  quota: number | null;
  max_size: number | null;
  cloneable: boolean;
  /** The owner's access key. */
  user: string;
  type: 'user';
  trashed_at: string | null;
  /** `info()` only: entries at the top level. */
  numFiles?: number;
  /** `info()` only: bytes of the regular files below the folder. */
  used_bytes?: number;
}

export interface CreateFolderOptions {
  /** Size quota: bytes or a size like `"10g"`; default the cluster's `vfolder.default_quota`. */
  quota?: number | string;
  /** The owner's own permission (default `rw`). */
  permission?: FolderPermission;
  usageMode?: 'general' | 'model' | 'data';
  cloneable?: boolean;
  /** Admins: create it for this keypair. */
  ownerAccessKey?: string;
}

/** A granted transfer: where to send it and the token that authorises it. */
export interface TransferTicket { url: string; token: string }

export interface UploadOptions {
  /** Reconnect attempts after a dropped connection (each resumes at the server's offset); default 5. */
  retries?: number;
  /** Called after each PATCH with the bytes the server has. */
  onProgress?: (offset: number, size: number) => void;
}

/** What a PATCH sends: writes the body into the request (not ending it), calling `progress` as it goes. */
type Body = (req: ClientRequest, progress: () => void) => Promise<void>;

const NETWORK_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ETIMEDOUT', 'ECONNABORTED', 'UND_ERR_SOCKET']);
const folderPath = (name: string) => `/folders/${encodeURIComponent(name)}`;

/** Folder routes; use them as `client.folders`. */
export class Folders {
  constructor(private readonly client: Client) {}

  /**
   * Create a folder (`POST /folders`). `QuotaExceeded` when the owner's resource policy's
   * `max_vfolder_count` is reached, `Conflict` when the name is taken.
   *
   * @example
   * const f = await client.folders.create('data', { quota: '10g' });
   * console.log(f.id, f.permission);
   */
  create(name: string, opts: CreateFolderOptions = {}): Promise<FolderInfo> {
    return this.client.request('POST', '/folders', {
      body: { name, quota: opts.quota, permission: opts.permission, usage_mode: opts.usageMode, cloneable: opts.cloneable, owner_access_key: opts.ownerAccessKey },
    });
  }

  /**
   * The caller's folders and those shared with them (`GET /folders`); `{ trash: true }` lists
   * the caller's folders in the trash instead.
   *
   * @example
   * for (const f of await client.folders.list()) console.log(f.name, f.is_owner ? 'own' : `shared ${f.permission}`);
   */
  list(opts: { trash?: boolean } = {}): Promise<FolderInfo[]> {
    return this.client.request('GET', '/folders', { query: { status: opts.trash ? 'delete-pending' : undefined } });
  }

  /**
   * One folder by name or id (`GET /folders/{name}`), with `numFiles` and `used_bytes`.
   *
   * @example
   * const { used_bytes, quota } = await client.folders.info('data');
   */
  info(name: string): Promise<FolderInfo> { return this.client.request('GET', folderPath(name)); }

  /**
   * Move a folder to the trash (`DELETE /folders/{name}`; owner only). Its data stays until
   * {@link purge}; {@link restore} takes it back.
   *
   * @example
   * await client.folders.delete('scratch');
   * await client.folders.purge('scratch');
   */
  async delete(name: string): Promise<void> { await this.client.request('DELETE', folderPath(name)); }

  /**
   * Take a folder out of the trash (`POST /folders/restore`).
   *
   * @example
   * await client.folders.restore('scratch');
   */
  restore(nameOrId: string): Promise<FolderInfo> { return this.client.request('POST', '/folders/restore', { body: { id: nameOrId } }); }

  /**
   * Delete a trashed folder's data for good (`POST /folders/purge`).
   *
   * @example
   * await client.folders.purge('scratch');
   */
  async purge(nameOrId: string): Promise<void> { await this.client.request('POST', '/folders/purge', { body: { id: nameOrId } }); }

  /**
   * Rename a folder (`POST /folders/{name}/rename`); its data does not move.
   *
   * @example
   * await client.folders.rename('data', 'data-2024');
   */
  rename(name: string, newName: string): Promise<FolderInfo> { return this.client.request('POST', `${folderPath(name)}/rename`, { body: { new_name: newName } }); }

  /**
   * Make a directory (`POST /folders/{name}/mkdir`); `parents` makes the missing ones above it.
   *
   * @example
   * await client.folders.mkdir('data', 'raw/2024', { parents: true, existOk: true });
   */
  async mkdir(name: string, path: string, opts: { parents?: boolean; existOk?: boolean } = {}): Promise<void> {
    await this.client.request('POST', `${folderPath(name)}/mkdir`, { body: { path, parents: opts.parents ?? false, exist_ok: opts.existOk ?? false } });
  }

  /**
   * A directory's entries (`GET /folders/{name}/files`), `.` for the folder's top.
   *
   * @example
   * for (const f of await client.folders.listFiles('data', 'raw')) console.log(f.mode, f.size, f.filename);
   */
  async listFiles(name: string, path = '.'): Promise<FileEntry[]> {
    const r = await this.client.request<{ files: string }>('GET', `${folderPath(name)}/files`, { query: { path } });
    return JSON.parse(r.files) as FileEntry[];
  }

  /**
   * Rename a file or directory in its directory (`POST /folders/{name}/rename-file`).
   *
   * @example
   * await client.folders.renameFile('data', 'raw/a.csv', 'b.csv'); // raw/a.csv → raw/b.csv
   */
  async renameFile(name: string, targetPath: string, newName: string): Promise<void> {
    await this.client.request('POST', `${folderPath(name)}/rename-file`, { body: { target_path: targetPath, new_name: newName } });
  }

  /**
   * Delete files (`POST /folders/{name}/delete-files`); directories with their contents need `recursive`.
   *
   * @example
   * await client.folders.deleteFiles('data', ['tmp'], { recursive: true });
   */
  async deleteFiles(name: string, files: string[], opts: { recursive?: boolean } = {}): Promise<void> {
    await this.client.request('POST', `${folderPath(name)}/delete-files`, { body: { files, recursive: opts.recursive ?? false } });
  }

  /**
   * Ask to upload `size` bytes to `path` (`POST /folders/{name}/request-upload`); send them with
   * {@link uploadTo}. {@link upload} does both.
   *
   * @example
   * const ticket = await client.folders.requestUpload('data', 'big.bin', 1 << 30);
   * await client.folders.uploadTo(ticket, 'big.bin');
   */
  requestUpload(name: string, path: string, size: number): Promise<TransferTicket> {
    return this.client.request('POST', `${folderPath(name)}/request-upload`, { body: { path, size } });
  }

  /**
   * Upload a local file (a path) or bytes to `remotePath` in the folder, parents made as needed.
   * A dropped connection is resumed from the server's offset (`retries` times).
   *
   * @example
   * await client.folders.upload('data', 'inputs/train.csv', './train.csv', {
   *   onProgress: (done, size) => console.log(`${done}/${size}`),
   * });
   */
  async upload(name: string, remotePath: string, source: string | Buffer | Uint8Array, opts: UploadOptions = {}): Promise<void> {
    const size = typeof source === 'string' ? (await stat(source)).size : source.length;
    const ticket = await this.requestUpload(name, remotePath, size);
    await this.uploadTo(ticket, source, opts);
  }

  /**
   * Send a file (or bytes) to a granted upload with tus 1.0: HEAD for the server's offset, then
   * one PATCH of the rest; again after a dropped connection. Resumes an upload another process
   * began, given its ticket.
   *
   * @example
   * const ticket = await client.folders.requestUpload('data', 'big.bin', size);
   * // ... the connection drops half way ...
   * await client.folders.uploadTo(ticket, './big.bin'); // goes on from where the server is
   */
  async uploadTo(ticket: TransferTicket, source: string | Buffer | Uint8Array, opts: UploadOptions = {}): Promise<void> {
    const size = typeof source === 'string' ? (await stat(source)).size : source.length;
    let attempts = 0;
    for (;;) {
      try {
        const offset = await this.uploadOffset(ticket);
        if (offset >= size) { opts.onProgress?.(offset, size); return; }
        // A file is sent from three reused 1 MiB buffers (sendFileRange), bytes as one write.
        const body: Body = typeof source === 'string'
          ? async (req, progress) => {
            const handle = await open(source, 'r');
            try { await sendFileRange(handle, offset, size - offset, req, { onChunk: progress }); } finally { await handle.close(); }
          }
          : async (req) => { await new Promise<void>((resolve, reject) => req.write(source.subarray(offset), (e) => (e ? reject(e) : resolve()))); };
        const res = await this.#transfer('PATCH', ticket, {
          'Tus-Resumable': '1.0.0', 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream', 'Content-Length': String(size - offset),
        }, body);
        const now = Number(res.headers['upload-offset']);
        opts.onProgress?.(now, size);
        if (now >= size) return;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (!code || !NETWORK_ERRORS.has(code) || attempts++ >= (opts.retries ?? 5)) throw err;
        await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempts)));
      }
    }
  }

  /**
   * The bytes of a granted upload the server has (tus HEAD `Upload-Offset`).
   *
   * @example
   * const done = await client.folders.uploadOffset(ticket);
   */
  async uploadOffset(ticket: TransferTicket): Promise<number> {
    const res = await this.#transfer('HEAD', ticket, { 'Tus-Resumable': '1.0.0' });
    return Number(res.headers['upload-offset']);
  }

  /**
   * Ask to download one file (`POST /folders/{name}/request-download`); fetch it with {@link downloadFrom}.
   *
   * @example
   * const ticket = await client.folders.requestDownload('data', 'results/model.bin');
   */
  requestDownload(name: string, path: string): Promise<TransferTicket> {
    return this.client.request('POST', `${folderPath(name)}/request-download`, { body: { path } });
  }

  /**
   * Download one file of the folder as a stream (its `content-length` header is the size);
   * `offset` resumes a partial download (an HTTP range).
   *
   * @example
   * import { pipeline } from 'node:stream/promises';
   * await pipeline(await client.folders.download('data', 'results/model.bin'), fs.createWriteStream('model.bin'));
   */
  async download(name: string, path: string, opts: { offset?: number } = {}): Promise<IncomingMessage> {
    return this.downloadFrom(await this.requestDownload(name, path), opts);
  }

  /**
   * Fetch a granted download.
   *
   * @example
   * const res = await client.folders.downloadFrom(ticket, { offset: 1024 });
   */
  downloadFrom(ticket: TransferTicket, opts: { offset?: number } = {}): Promise<IncomingMessage> {
    return this.#transfer('GET', ticket, opts.offset ? { Range: `bytes=${opts.offset}-` } : {}, undefined, true);
  }

  /**
   * Download one file of the folder into a local file (created or truncated; with `offset`, the
   * bytes from there on are written at that offset of an existing file, to resume). The socket's
   * chunks are gathered and written a few MiB at a time. Resolves with the bytes written.
   *
   * @example
   * await client.folders.downloadFile('data', 'results/model.bin', './model.bin');
   */
  async downloadFile(name: string, path: string, localPath: string, opts: { offset?: number } = {}): Promise<number> {
    const offset = opts.offset ?? 0;
    const res = await this.download(name, path, { offset });
    let handle: FileHandle;
    try {
      handle = await open(localPath, offset ? 'r+' : 'w');
    } catch (e) {
      res.destroy();
      throw e;
    }
    try {
      return await writeStreamAt(res, handle, offset, {
        cutShort: () => Object.assign(new Error('the download was cut short'), { code: 'ECONNRESET' }),
      });
    } finally {
      await handle.close();
    }
  }

  /**
   * Share a folder with users (their emails) or keypairs (access keys) at `ro`, `rw` or `wd`
   * (`POST /folders/{name}/share`; owner only). Sharing again changes the permission.
   *
   * @example
   * await client.folders.share('data', ['alice@example.com'], 'ro');
   */
  async share(name: string, emails: string[], permission: FolderPermission = 'rw'): Promise<string[]> {
    const r = await this.client.request<{ shared_emails: string[] }>('POST', `${folderPath(name)}/share`, { body: { emails, permission } });
    return r.shared_emails;
  }

  /**
   * Stop sharing (`POST /folders/{name}/unshare`).
   *
   * @example
   * await client.folders.unshare('data', ['alice@example.com']);
   */
  async unshare(name: string, emails: string[]): Promise<string[]> {
    const r = await this.client.request<{ unshared_emails: string[] }>('POST', `${folderPath(name)}/unshare`, { body: { emails } });
    return r.unshared_emails;
  }

  /** One unsigned transfer request (the ticket's token authorises it); a problem answer thrown as its error class. */
  #transfer(method: string, ticket: TransferTicket, headers: Record<string, string>, body?: Body, keepBody = false): Promise<IncomingMessage> {
    const url = new URL(ticket.url);
    url.searchParams.set('token', ticket.token);
    const timeoutMs = this.client.timeoutMs;
    return new Promise((resolve, reject) => {
      const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method, headers }, (res) => {
        clearTimeout(timer);
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) {
          if (keepBody) { resolve(res); return; }
          res.resume();
          res.on('end', () => resolve(res));
          res.on('error', reject);
          return;
        }
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => { if (chunks.length < 1024) chunks.push(c); });
        res.on('end', () => {
          let problem: Partial<ProblemBody> = { title: `HTTP ${status} ${res.statusMessage ?? ''}`.trim() };
          try { const p = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown; if (p && typeof p === 'object') problem = p as Partial<ProblemBody>; } catch { /* keep the status line */ }
          reject(errorFromProblem(status, problem));
        });
        res.on('error', reject);
      });
      // The limit covers reaching the answer's headers; a long upload's body is not limited.
      let timer = setTimeout(() => undefined, 0);
      const arm = () => { clearTimeout(timer); timer = setTimeout(() => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })), timeoutMs); };
      arm();
      req.on('error', (err) => { clearTimeout(timer); reject(err); });
      if (!body) { req.end(); return; }
      // Progress keeps the request alive; a failure to read the source ends it.
      body(req, arm).then(() => req.end(), (err: Error) => req.destroy(err));
    });
  }
}
