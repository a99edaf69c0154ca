// File transfer with a session (API.md "Sessions": upload, download, files), as `client.files`.
// Uploads are streamed as multipart/form-data and downloads come back as a stream: neither is
// held whole in memory.
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { errorFromProblem, ServiceUnavailable, type ProblemBody } from '../../schema/errors.ts';
import type { SignatureInput } from '../../schema/signing.ts';
import type { Client } from './client.ts';

/** One file to upload: its path below `/home/work` (sub-directories are created) and its bytes. */
export interface UploadFile {
  /** Relative to `/home/work` (e.g. `data/input.csv`); `..`, NUL bytes and paths outside `/home/work` are refused. */
  path: string;
  /** The content: bytes, or a stream read as the upload goes (e.g. `fs.createReadStream(...)`). */
  data: Buffer | Uint8Array | string | Readable;
}

/** A directory entry, as Backend.AI's agent reports it. */
export interface FileEntry {
  filename: string;
  /** Bytes (a symbolic link's: the length of its target). */
  size: number;
  /** Modification time, seconds since the epoch. */
  mtime: number;
  /** `ls -l` style: `-rw-r--r--`, `drwxr-xr-x`, `lrwxrwxrwx`. */
  mode: string;
}

export interface FileList {
  files: FileEntry[];
  /** The directory's absolute path in the container, e.g. `/home/work/data`. */
  abspath: string;
}

/** Signs one request with the client's keypair (given by the client; the secret stays there). */
export type RequestSigner = (parts: Omit<SignatureInput, 'secretKey'>) => { authorization: string };

const sessionPath = (nameOrId: string): string => `/session/${encodeURIComponent(nameOrId)}`;

/** A Content-Disposition `filename` parameter carrying any path exactly (RFC 5987 form for the unusual ones). */
function filenameParam(path: string): string {
  if (/^[\x20-\x7e]*$/.test(path) && !/["\\]/.test(path)) return `filename="${path}"`;
  return `filename*=UTF-8''${encodeURIComponent(path)}`;
}

/** File routes of a session; use them as `client.files`. */
export class Files {
  readonly #client: Client;
  readonly #sign: RequestSigner;

  constructor(client: Client, sign: RequestSigner) {
    this.#client = client;
    this.#sign = sign;
  }

  /**
   * Upload files into the session's `/home/work` (`POST /session/{name}/upload`), streamed as
   * multipart/form-data. All or nothing: when one path is refused, or the files together pass
   * the cluster's `session.max_upload_bytes` (`PayloadTooLarge`), none is written.
   *
   * @example
   * await client.files.upload('my-session', [
   *   { path: 'hello.txt', data: Buffer.from('hi\n') },
   *   { path: 'data/big.bin', data: fs.createReadStream('big.bin') },
   * ]);
   */
  async upload(nameOrId: string, files: UploadFile[]): Promise<void> {
    if (!files.length) throw new TypeError('upload: give at least one file');
    const boundary = `----flotilla${Math.random().toString(16).slice(2)}${Date.now().toString(16)}`;
    const heads = files.map((f) => Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="src"; ${filenameParam(f.path)}\r\nContent-Type: application/octet-stream\r\n\r\n`));
    const tail = Buffer.from(`--${boundary}--\r\n`);
    const crlf = Buffer.from('\r\n');
    // With only bytes the length is known; with a stream the body goes chunked.
    const sized = files.every((f) => !(f.data instanceof Readable));
    const length = sized
      ? heads.reduce((n, h, i) => n + h.length + Buffer.byteLength(files[i].data as Buffer | string) + crlf.length, tail.length)
      : undefined;
    async function* body(): AsyncGenerator<Buffer | Uint8Array> {
      for (let i = 0; i < files.length; i++) {
        yield heads[i];
        const data = files[i].data;
        // Empty chunks are left out: a zero-length write would end a chunked body early.
        if (data instanceof Readable) {
          for await (const chunk of data) {
            const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk as Uint8Array;
            if (bytes.length) yield bytes;
          }
        } else if (data.length) {
          yield typeof data === 'string' ? Buffer.from(data) : data;
        }
        yield crlf;
      }
      yield tail;
    }
    await this.#answer(await this.#send('POST', `${sessionPath(nameOrId)}/upload`, {
      contentType: `multipart/form-data; boundary=${boundary}`, body: body(), length,
    }));
  }

  /**
   * Download files or directories of the session's `/home/work` (`POST /session/{name}/download`)
   * as one tar stream, read as it arrives. Entries are named like `docker cp` names them: each
   * path's last component, then what is below it.
   *
   * @example
   * import tar from 'tar-stream';
   * const archive = await client.files.download('my-session', ['results', 'log.txt']);
   * const extract = tar.extract();
   * extract.on('entry', (header, stream, next) => { console.log(header.name); stream.on('end', next).resume(); });
   * archive.pipe(extract);
   */
  async download(nameOrId: string, paths: string[]): Promise<Readable> {
    const json = Buffer.from(JSON.stringify({ files: paths }));
    return this.#answer(await this.#send('POST', `${sessionPath(nameOrId)}/download`, { contentType: 'application/json', body: [json], length: json.length }), true);
  }

  /**
   * The entries of a directory below `/home/work` (`GET /session/{name}/files`), `.` for
   * `/home/work` itself.
   *
   * @example
   * const { files } = await client.files.listFiles('my-session', 'data');
   * for (const f of files) console.log(f.mode, f.size, f.filename);
   */
  async listFiles(nameOrId: string, path = '.'): Promise<FileList> {
    const answer = await this.#client.request<{ files: string; abspath: string }>('GET', `${sessionPath(nameOrId)}/files`, { query: { path } });
    return { files: JSON.parse(answer.files) as FileEntry[], abspath: answer.abspath };
  }

  /**
   * One signed request (node:http: fetch keeps a streamed request body in memory) to the
   * manager that answered last; the time limit covers everything up to the answer's headers.
   */
  #send(method: string, path: string, opts: { contentType: string; body: AsyncIterable<Uint8Array> | Uint8Array[]; length?: number }): Promise<{ res: IncomingMessage; req: ClientRequest }> {
    const url = new URL(new URL(this.#client.endpoint).pathname.replace(/\/+$/, '') + path, this.#client.endpoint);
    const date = new Date().toISOString();
    const { authorization } = this.#sign({
      method, pathWithQuery: url.pathname + url.search, date, host: url.host, contentType: opts.contentType, version: this.#client.apiVersion,
    });
    const headers: Record<string, string> = {
      Host: url.host, Date: date, 'X-BackendAI-Version': this.#client.apiVersion, Authorization: authorization, 'Content-Type': opts.contentType,
    };
    if (opts.length !== undefined) headers['Content-Length'] = String(opts.length);
    const timeoutMs = this.#client.timeoutMs;
    return new Promise((resolve, reject) => {
      const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method, headers }, (res) => {
        clearTimeout(timer);
        resolve({ res, req });
      });
      const timer = setTimeout(() => req.destroy(new ServiceUnavailable(`no answer from ${url.origin} within ${timeoutMs} ms (${method} ${url.pathname})`)), timeoutMs);
      req.on('error', (err) => { clearTimeout(timer); reject(err); });
      // An answer can come before the body is all sent (a refusal): what is left is not sent.
      pipeline(Readable.from(opts.body, { objectMode: false }), req).catch(() => undefined);
    });
  }

  /** Read the answer; a problem answer thrown as its typed error class. */
  async #answer({ res, req }: { res: IncomingMessage; req: ClientRequest }, keepBody = false): Promise<IncomingMessage> {
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) {
      if (!keepBody) { res.resume(); await finished(res).catch(() => undefined); }
      return res;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res) { if ((size += (chunk as Buffer).length) <= 1024 * 1024) chunks.push(chunk as Buffer); }
    if (!req.writableFinished) req.destroy();
    let problem: Partial<ProblemBody> = { title: `HTTP ${status} ${res.statusMessage ?? ''}`.trim() };
    try {
      const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
      if (parsed && typeof parsed === 'object') problem = parsed as Partial<ProblemBody>;
    } catch { /* not JSON: keep the status line */ }
    throw errorFromProblem(status, problem);
  }
}
