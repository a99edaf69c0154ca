// File transfer for a session's main kernel (API.md "Sessions": upload, download, files), apart
// from HTTP: uploads are streamed to the kernel's agent in chunks, the next one sent after the
// previous one's acknowledgement; downloads are pulled from the agent chunk by chunk as the
// HTTP answer is read. Neither is ever whole in memory.
import { Readable } from 'node:stream';
import {
  checkDownloadReadReply, checkListFilesReply, FILE_CHUNK_BYTES, FileRpcError, parseWorkPath,
  type FileEntry, type FileErrorCode, type FileRpcName, type FileRpcs,
} from '../../schema/file-rpc.ts';
import { Conflict, InvalidAPIParameters, NotFound, PayloadTooLarge, ServiceUnavailable } from '../../schema/errors.ts';
import type { Database } from '../stores/types.ts';
import { RpcError, type AgentRegistry } from './agents.ts';
import type { SessionRow } from './sessions.ts';
import { acceptsCode } from '../../schema/status.ts';

/** A chunk or a read answers at once; these bound a lost answer. */
const CHUNK_RPC_TIMEOUT_MS = 60_000;
/** Putting an upload into the container, or archiving a download on the agent, takes as long as the data does. */
const BULK_RPC_TIMEOUT_MS = 15 * 60_000;

/** One file of an upload: its path below /home/work and its bytes, as they arrive. */
export interface IncomingFile { path: string; data: AsyncIterable<Buffer | Uint8Array> }

type RawCall = (agentId: string, name: string, req: unknown, timeoutMs?: number) => Promise<unknown>;

/** A file RPC through the registry's generic call (AgentRegistry.call is typed by AgentRpcs only). */
export function callFileRpc<N extends FileRpcName>(agents: AgentRegistry, agentId: string, name: N, req: FileRpcs[N]['req'], timeoutMs: number): Promise<FileRpcs[N]['res']> {
  return (agents.call as unknown as RawCall).call(agents, agentId, name, req, timeoutMs) as Promise<FileRpcs[N]['res']>;
}

const CODE_TO_PROBLEM: Record<FileErrorCode, (msg: string) => Error> = {
  'invalid-path': (m) => new InvalidAPIParameters(m),
  'not-a-directory': (m) => new InvalidAPIParameters(m),
  'is-a-directory': (m) => new InvalidAPIParameters(m),
  'not-found': (m) => new NotFound(m),
  'payload-too-large': (m) => new PayloadTooLarge(m),
  'kernel-not-running': (m) => new Conflict(m),
  'unknown-transfer': (m) => new ServiceUnavailable(m),
};

/** An agent's (or our own path check's) error as the API's problem. */
export function mapFileError(e: unknown): Error {
  if (e instanceof FileRpcError || e instanceof RpcError) {
    const make = e.code ? CODE_TO_PROBLEM[e.code as FileErrorCode] : undefined;
    if (make) return make(e.message);
    if (e instanceof RpcError) return new ServiceUnavailable(e.message);
  }
  return e as Error;
}

export class FileService {
  constructor(private readonly deps: { db: Database; agents: AgentRegistry }) {}

  private rpc<N extends FileRpcName>(agentId: string, name: N, req: FileRpcs[N]['req'], timeoutMs = CHUNK_RPC_TIMEOUT_MS): Promise<FileRpcs[N]['res']> {
    return callFileRpc(this.deps.agents, agentId, name, req, timeoutMs);
  }

  private async mainKernel(row: SessionRow): Promise<{ id: string; agent_id: string }> {
    if (!acceptsCode(row.status)) throw new Conflict(`the session is ${row.status}, not RUNNING`);
    const k = (await this.deps.db.query<{ id: string; agent_id: string | null }>(
      `SELECT id, agent_id FROM kernels WHERE session_id = $1 AND cluster_role = 'main'`, [row.id])).rows[0];
    if (!k?.agent_id) throw new Conflict('the session has no running main kernel');
    return { id: k.id, agent_id: k.agent_id };
  }

  /**
   * Stream files into the main kernel's /home/work. All or nothing: the agent spools every file
   * and puts them into the container only once all have arrived, so a refused path, a size over
   * `maxBytes` (all files together) or a broken request leaves nothing behind.
   */
  async upload(row: SessionRow, files: AsyncIterable<IncomingFile>, maxBytes: number): Promise<{ files: number; bytes: number }> {
    const k = await this.mainKernel(row);
    let uploadId: string | undefined;
    let total = 0;
    let index = 0;
    try {
      for await (const f of files) {
        try { parseWorkPath(f.path, { file: true }); } catch (e) { throw mapFileError(e); }
        uploadId ??= (await this.rpc(k.agent_id, 'uploadBegin', { kernelId: k.id, maxBytes })).uploadId;
        let pending: Buffer[] = [];
        let pendingBytes = 0;
        let offset = 0;
        const send = async () => {
          const data = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes);
          pending = [];
          pendingBytes = 0;
          await this.rpc(k.agent_id, 'uploadChunk', { uploadId: uploadId!, file: index, path: f.path, offset, data });
          offset += data.length;
        };
        for await (const chunk of f.data) {
          const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
          total += buf.length;
          if (total > maxBytes) throw new PayloadTooLarge(`the upload exceeds ${maxBytes} bytes (session.max_upload_bytes)`);
          // Cut into chunks of FILE_CHUNK_BYTES; each is sent after the previous one's acknowledgement.
          for (let at = 0; at < buf.length;) {
            const take = Math.min(buf.length - at, FILE_CHUNK_BYTES - pendingBytes);
            pending.push(buf.subarray(at, at + take));
            pendingBytes += take;
            at += take;
            if (pendingBytes >= FILE_CHUNK_BYTES) await send();
          }
        }
        if (pendingBytes > 0 || offset === 0) await send(); // an empty file is one empty chunk
        index++;
      }
      if (uploadId === undefined) throw new InvalidAPIParameters('no files in the request (multipart/form-data parts with a filename)');
      return await this.rpc(k.agent_id, 'uploadCommit', { uploadId }, BULK_RPC_TIMEOUT_MS);
    } catch (e) {
      if (uploadId !== undefined) {
        const id = uploadId;
        await this.rpc(k.agent_id, 'uploadAbort', { uploadId: id }).catch(() => undefined);
      }
      throw mapFileError(e);
    }
  }

  /**
   * A tar stream of the given paths (files or directories, below /home/work) of the main
   * kernel. The agent archives them first (so the answer's size is known), then the stream
   * pulls one chunk at a time from it as it is read; destroying the stream releases the
   * agent's copy.
   */
  async download(row: SessionRow, paths: string[]): Promise<{ stream: Readable; size: number }> {
    if (!paths.length) throw new InvalidAPIParameters('files: name at least one path');
    for (const p of paths) { try { parseWorkPath(p, { allowRoot: true }); } catch (e) { throw mapFileError(e); } }
    const k = await this.mainKernel(row);
    let begun: { downloadId: string; size: number };
    try {
      begun = await this.rpc(k.agent_id, 'downloadBegin', { kernelId: k.id, paths }, BULK_RPC_TIMEOUT_MS);
    } catch (e) { throw mapFileError(e); }
    const { downloadId, size } = begun;
    let offset = 0;
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      void this.rpc(k.agent_id, 'downloadClose', { downloadId }).catch(() => undefined);
    };
    const stream = new Readable({
      highWaterMark: 2 * FILE_CHUNK_BYTES,
      read: () => {
        this.rpc(k.agent_id, 'downloadRead', { downloadId, offset, maxBytes: FILE_CHUNK_BYTES }).then((r) => {
          if (!checkDownloadReadReply.Check(r)) throw new Error('malformed downloadRead reply');
          offset += r.data.length;
          if (r.data.length) stream.push(r.data);
          if (r.eof || offset >= size) { close(); stream.push(null); } else if (!r.data.length) throw new Error('the agent sent an empty chunk before the end');
        }).catch((e: unknown) => { close(); stream.destroy(mapFileError(e)); });
      },
      destroy: (err, cb) => { close(); cb(err); },
    });
    return { stream, size };
  }

  /** The entries of a directory below /home/work, as Backend.AI's agent reports them. */
  async list(row: SessionRow, path: string): Promise<{ files: FileEntry[]; abspath: string }> {
    try { parseWorkPath(path, { allowRoot: true }); } catch (e) { throw mapFileError(e); }
    const k = await this.mainKernel(row);
    try {
      const r = await this.rpc(k.agent_id, 'listFiles', { kernelId: k.id, path });
      if (!checkListFilesReply.Check(r)) throw new ServiceUnavailable('malformed listFiles reply from the agent');
      return r;
    } catch (e) { throw mapFileError(e); }
  }
}
