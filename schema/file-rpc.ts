// File transfer between the manager and an agent (API.md "Sessions": upload, download, files),
// on the same socket.io namespace as the RPCs of agent-rpc.ts. Uploads are pushed by the
// manager in chunks, each sent after the previous one's acknowledgement; downloads are pulled
// by the manager, chunk by chunk. Both sides check every payload against these schemas.
//
// Paths are always relative to the kernel's work directory (WORK_DIR); `parseWorkPath` is the
// one place that decides which path strings are acceptable, for both sides.
import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';

/** Every path of the file routes is inside this directory of the container. */
export const WORK_DIR = '/home/work';
/** Size of the data chunks the manager sends and asks for. */
export const FILE_CHUNK_BYTES = 1024 * 1024;
/** The largest chunk either side accepts. */
export const MAX_FILE_CHUNK_BYTES = 4 * 1024 * 1024;
const MAX_PATH_CHARS = 4096;
const MAX_SEGMENT_BYTES = 255;
const MAX_DEPTH = 128;

const Id = Type.String({ minLength: 1, maxLength: 128 });
const TransferId = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' });
const PathText = Type.String({ maxLength: MAX_PATH_CHARS });
const Bytes = Type.Refine(Type.Unsafe<Buffer>({}), (v: unknown) => Buffer.isBuffer(v) && v.length <= MAX_FILE_CHUNK_BYTES);

export const UploadBeginRequest = Type.Object({
  kernelId: Id,
  /** The upload fails with `payload-too-large` once its files together exceed this. */
  maxBytes: Type.Integer({ minimum: 0 }),
});
export type UploadBeginRequest = Static<typeof UploadBeginRequest>;

export const UploadChunkRequest = Type.Object({
  uploadId: TransferId,
  /** Index of the file in the upload (0, 1, ...); a new index starts a new file. */
  file: Type.Integer({ minimum: 0, maximum: 9999 }),
  /** The file's path relative to WORK_DIR (the same on every chunk of the file). */
  path: PathText,
  /** Byte offset of `data` in the file: chunks come in order, a repeated one is acknowledged again. */
  offset: Type.Integer({ minimum: 0 }),
  data: Bytes,
});
export type UploadChunkRequest = Static<typeof UploadChunkRequest>;

export const UploadRef = Type.Object({ uploadId: TransferId });
export type UploadRef = Static<typeof UploadRef>;

export const DownloadBeginRequest = Type.Object({
  kernelId: Id,
  paths: Type.Array(PathText, { minItems: 1, maxItems: 1000 }),
});
export type DownloadBeginRequest = Static<typeof DownloadBeginRequest>;

export const DownloadReadRequest = Type.Object({
  downloadId: TransferId,
  /** Where to read from: the manager asks for the next chunk at the offset it has reached. */
  offset: Type.Integer({ minimum: 0 }),
  maxBytes: Type.Integer({ minimum: 1, maximum: MAX_FILE_CHUNK_BYTES }),
});
export type DownloadReadRequest = Static<typeof DownloadReadRequest>;

export const DownloadRef = Type.Object({ downloadId: TransferId });
export type DownloadRef = Static<typeof DownloadRef>;

export const ListFilesRequest = Type.Object({ kernelId: Id, path: PathText });
export type ListFilesRequest = Static<typeof ListFilesRequest>;

/** One directory entry, shaped as Backend.AI's agent reports it (its CLI prints these). */
export const FileEntry = Type.Object({
  filename: Type.String(),
  size: Type.Integer({ minimum: 0 }),
  /** Modification time, seconds since the epoch (Backend.AI's client reads it with `datetime.fromtimestamp`). */
  mtime: Type.Number(),
  /** `ls -l` style, as Python's `stat.filemode` writes it: `-rw-r--r--`, `drwxr-xr-x`, `lrwxrwxrwx`. */
  mode: Type.String(),
});
export type FileEntry = Static<typeof FileEntry>;

export const ListFilesReply = Type.Object({ files: Type.Array(FileEntry), abspath: Type.String() });
export type ListFilesReply = Static<typeof ListFilesReply>;

export const DownloadReadReply = Type.Object({ data: Bytes, eof: Type.Boolean() });
export type DownloadReadReply = Static<typeof DownloadReadReply>;

export const checkUploadBegin = Compile(UploadBeginRequest);
export const checkUploadChunk = Compile(UploadChunkRequest);
export const checkUploadRef = Compile(UploadRef);
export const checkDownloadBegin = Compile(DownloadBeginRequest);
export const checkDownloadRead = Compile(DownloadReadRequest);
export const checkDownloadRef = Compile(DownloadRef);
export const checkListFiles = Compile(ListFilesRequest);
export const checkListFilesReply = Compile(ListFilesReply);
export const checkDownloadReadReply = Compile(DownloadReadReply);

export interface FileRpcs {
  uploadBegin: { req: UploadBeginRequest; res: { uploadId: string } };
  uploadChunk: { req: UploadChunkRequest; res: { received: number } };
  /** Checks every path in the container, then puts the files there in one archive. */
  uploadCommit: { req: UploadRef; res: { files: number; bytes: number } };
  uploadAbort: { req: UploadRef; res: { aborted: boolean } };
  /** Checks the paths and archives them (one tar) on the agent; `size` is the tar's. */
  downloadBegin: { req: DownloadBeginRequest; res: { downloadId: string; size: number } };
  downloadRead: { req: DownloadReadRequest; res: DownloadReadReply };
  downloadClose: { req: DownloadRef; res: { closed: boolean } };
  listFiles: { req: ListFilesRequest; res: ListFilesReply };
}
export type FileRpcName = keyof FileRpcs;
export const FILE_RPC_NAMES: readonly FileRpcName[] = [
  'uploadBegin', 'uploadChunk', 'uploadCommit', 'uploadAbort', 'downloadBegin', 'downloadRead', 'downloadClose', 'listFiles',
];

/**
 * Error codes the agent attaches to failed file RPCs (RpcReply `error.code`); the manager maps
 * them to the API's problems.
 */
export type FileErrorCode =
  | 'invalid-path' | 'not-found' | 'not-a-directory' | 'is-a-directory' | 'payload-too-large'
  | 'kernel-not-running' | 'unknown-transfer';

export class FileRpcError extends Error {
  constructor(readonly code: FileErrorCode, message: string) { super(message); }
}

/**
 * A user's path → its segments below WORK_DIR. Relative paths are taken from WORK_DIR; an
 * absolute path is accepted only inside WORK_DIR (`/home/work/x`, which Backend.AI's clients
 * send, e.g. `backend.ai ls` asks for `/home/work`). Refused (FileRpcError `invalid-path`):
 * NUL bytes, any `..` segment, other absolute paths, over-long names; and, unless `allowRoot`,
 * a path naming WORK_DIR itself; with `file` (an upload's target), a path ending in "/".
 * Empty and `.` segments are dropped.
 *
 * This decides only what the string says; symbolic links are checked in the container, at the
 * time of each operation.
 */
export function parseWorkPath(raw: unknown, opts: { allowRoot?: boolean; file?: boolean } = {}): string[] {
  const refuse = (why: string): never => { throw new FileRpcError('invalid-path', `${JSON.stringify(raw)}: ${why}`); };
  if (typeof raw !== 'string') return refuse('a path must be a string');
  if (raw.length > MAX_PATH_CHARS) return refuse(`longer than ${MAX_PATH_CHARS} characters`);
  if (raw.includes('\0')) return refuse('contains a NUL byte');
  let rest = raw;
  if (raw.startsWith('/')) {
    if (raw !== WORK_DIR && !raw.startsWith(`${WORK_DIR}/`)) return refuse(`absolute paths must be inside ${WORK_DIR}`);
    rest = raw.slice(WORK_DIR.length);
  }
  const segments = rest.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) return refuse('".." is not allowed in paths');
  if (segments.some((s) => Buffer.byteLength(s) > MAX_SEGMENT_BYTES)) return refuse(`a name is longer than ${MAX_SEGMENT_BYTES} bytes`);
  if (segments.length > MAX_DEPTH) return refuse(`deeper than ${MAX_DEPTH} levels`);
  if (!segments.length && !opts.allowRoot) return refuse(`names ${WORK_DIR} itself, not a file in it`);
  // "dir/" (or "dir/.") names a directory: an upload written there would silently become a file named dir.
  if (opts.file && /\/\.?$/.test(raw)) return refuse('names a directory (it ends with "/"), not a file');
  return segments;
}

/** Segments → the absolute path in the container. */
export function workAbsPath(segments: readonly string[]): string {
  return segments.length ? `${WORK_DIR}/${segments.join('/')}` : WORK_DIR;
}
