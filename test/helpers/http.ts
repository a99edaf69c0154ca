// A raw signed request (node:http, which can send a body with GET), so tests can bend any part
// of it: date, version, content type, signature, body.
import { request } from 'node:http';
import { API_VERSION, signRequest } from '../../schema/signing.ts';

export interface RawOptions {
  body?: string; contentType?: string; date?: string; sendDate?: string; secret?: string; version?: string | null; auth?: string | null;
  headers?: Record<string, string>;
}
export interface RawAnswer { status: number; type: string | null; headers: Record<string, string | string[] | undefined>; body: any }

export function rawRequest(base: string, keys: { ak: string; sk: string }, method: string, path: string, opts: RawOptions = {}): Promise<RawAnswer> {
  const url = new URL(path, base);
  const date = opts.date ?? new Date().toISOString();
  const version = opts.version === undefined ? API_VERSION : opts.version;
  const headers: Record<string, string> = { Date: opts.sendDate ?? date, ...opts.headers };
  if (version) headers['X-BackendAI-Version'] = version;
  if (opts.contentType) headers['Content-Type'] = opts.contentType;
  const { authorization } = signRequest({
    method, pathWithQuery: url.pathname + url.search, date, host: url.host, contentType: opts.contentType, version: version ?? '',
    accessKey: keys.ak, secretKey: opts.secret ?? keys.sk,
  });
  if (opts.auth !== null) headers.Authorization = opts.auth ?? authorization;
  if (opts.body !== undefined) headers['Content-Length'] = String(Buffer.byteLength(opts.body));
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      let text = '';
      res.on('data', (b) => { text += b; });
      res.on('end', () => {
        let body: unknown = text;
        try { body = text ? JSON.parse(text) : undefined; } catch { /* not JSON: the test sees the text */ }
        resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'] ?? null, headers: res.headers, body });
      });
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}
