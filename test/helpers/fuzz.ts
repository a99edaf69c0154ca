// Tools of the API fuzz suite (test/e2e/fuzz.test.ts): a raw HTTP request whose every part a
// generated case may bend (the request target is sent byte for byte, not normalised by URL;
// header values may carry Latin-1 bytes; the body may be any bytes), signed as Backend.AI
// signs and then broken as the case says; a pool that runs cases a few at a time; and a
// fingerprint of the durable tables, to prove that no case changed any of them.
import { Agent, request } from 'node:http';
import { API_VERSION, parseRequestDate, signRequest } from '../../schema/signing.ts';
import type { Database } from '../../runtime/stores/types.ts';

export interface Keys { ak: string; sk: string }

/** One request as a case describes it. Unset fields are what a correct client sends. */
export interface FuzzRequest {
  method: string;
  /** The raw request target (path and query), sent as is. */
  path: string;
  body?: string | Buffer;
  /** Sent as Content-Type (and signed as such unless signed.contentType says otherwise). */
  contentType?: string;
  /** Whose keys sign it (undefined: no Authorization at all unless `authorization` is set). */
  keys?: Keys;
  /** Override what the signature covers, to forge a mismatch. */
  signed?: { method?: string; path?: string; host?: string; contentType?: string | null; version?: string; secret?: string; date?: string; accessKey?: string };
  /** The Date header value: undefined = now (ISO 8601); null = none. */
  date?: string | null;
  /** Send the date as X-BackendAI-Date instead of Date. */
  dateHeader?: 'Date' | 'X-BackendAI-Date';
  /** undefined = API_VERSION; null = no header. */
  version?: string | null;
  /** A literal Authorization header (replaces the computed one); null = none. */
  authorization?: string | null;
  /** Change the computed Authorization header (a flipped signature digit, say). */
  tamper?: (authorization: string) => string;
  /** Extra headers (Latin-1 values allowed). */
  headers?: Record<string, string>;
}

export interface FuzzAnswer { status: number; contentType: string; text: string; json: unknown }

const pool = new Agent({ keepAlive: true, maxSockets: 16 });

/** A date no parser chokes on, to sign with when the case sends a broken one. */
const fallbackDate = () => new Date().toISOString();

/**
 * Send a request. A kept-alive connection that the server closed after its previous answer
 * fails the next request at once (ECONNRESET on a reused socket): that one is sent again, once,
 * on a fresh connection, as node's documentation advises.
 */
export async function send(base: string, r: FuzzRequest): Promise<FuzzAnswer> {
  try {
    return await sendOnce(base, r, false);
  } catch (e) {
    if (!(e as { reusedSocket?: boolean }).reusedSocket) throw e;
    return sendOnce(base, r, true);
  }
}

function sendOnce(base: string, r: FuzzRequest, fresh: boolean): Promise<FuzzAnswer> {
  const url = new URL(base);
  const host = url.host;
  const date = r.date === undefined ? new Date().toISOString() : r.date;
  const version = r.version === undefined ? API_VERSION : r.version;
  const headers: Record<string, string> = { ...r.headers };
  if (date !== null) headers[r.dateHeader ?? 'Date'] = date;
  if (version !== null) headers['X-BackendAI-Version'] = version;
  if (r.contentType !== undefined) headers['Content-Type'] = r.contentType;
  if (r.body !== undefined) headers['Content-Length'] = String(Buffer.byteLength(r.body));
  if (r.authorization !== undefined) {
    if (r.authorization !== null) headers.Authorization = r.authorization;
  } else if (r.keys) {
    const s = r.signed ?? {};
    let signDate = s.date ?? date ?? fallbackDate();
    if (!parseRequestDate(signDate)) signDate = fallbackDate(); // an unreadable date is refused before the signature matters
    const { authorization } = signRequest({
      method: s.method ?? r.method, pathWithQuery: s.path ?? r.path, date: signDate, host: s.host ?? host,
      contentType: s.contentType === undefined ? r.contentType : s.contentType, version: s.version ?? version ?? '',
      accessKey: s.accessKey ?? r.keys.ak, secretKey: s.secret ?? r.keys.sk,
    });
    headers.Authorization = r.tamper ? r.tamper(authorization) : authorization;
  }
  // Huge bodies go on a connection of their own: the server may close it after refusing them.
  const big = r.body !== undefined && Buffer.byteLength(r.body) > 256 * 1024;
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = request({ host: url.hostname, port: url.port, method: r.method, path: r.path, headers, agent: big || fresh ? false : pool }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
        resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), text, json });
      });
    });
    req.on('error', (e) => {
      if (answered) return;
      const code = (e as NodeJS.ErrnoException).code;
      reject(Object.assign(e, { reusedSocket: req.reusedSocket && (code === 'ECONNRESET' || e.message === 'socket hang up') }));
    });
    req.end(r.body);
  });
}

/** Run fn over items, at most `concurrency` at once; results in order. */
export async function inPool<T, R>(items: T[], concurrency: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }));
  return out;
}

/**
 * Row count and md5 of every row (ordered) of each table, or of the stable columns of a table
 * that changes by itself. Two equal fingerprints: no row was added, removed or changed.
 */
export async function fingerprint(db: Database, tables: Record<string, string>): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [name, select] of Object.entries(tables)) {
    const r = (await db.query<{ n: number; h: string }>(
      `SELECT count(*)::int AS n, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS h FROM (${select}) t`)).rows[0];
    out[name] = `${r.n} rows, md5 ${r.h}`;
  }
  return out;
}

/** The rows of the tables, as JSON text (for telling what changed when a fingerprint did). */
export async function rowsOf(db: Database, tables: Record<string, string>): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const [name, select] of Object.entries(tables)) {
    out[name] = (await db.query<{ row: string }>(`SELECT to_jsonb(t)::text AS row FROM (${select}) t ORDER BY 1`)).rows.map((x) => x.row);
  }
  return out;
}

/** What differs between two rowsOf() results: rows gone, rows new, and the changed columns of rows kept (by their first column). */
export function rowDiff(before: Record<string, string[]>, after: Record<string, string[]>): string {
  const lines: string[] = [];
  const cut = (v: unknown) => { const t = JSON.stringify(v) ?? 'undefined'; return t.length > 300 ? `${t.slice(0, 300)}…` : t; };
  for (const table of Object.keys(before)) {
    const key = (row: string) => { const o = JSON.parse(row) as Record<string, unknown>; return String(Object.values(o)[0] ?? ''); };
    const gone = before[table].filter((r) => !(after[table] ?? []).includes(r));
    const added = (after[table] ?? []).filter((r) => !before[table].includes(r));
    const addedByKey = new Map(added.map((r) => [key(r), r]));
    for (const row of gone) {
      const same = addedByKey.get(key(row));
      if (same) {
        addedByKey.delete(key(row));
        const [a, b] = [JSON.parse(row) as Record<string, unknown>, JSON.parse(same) as Record<string, unknown>];
        const cols = Object.keys({ ...a, ...b }).filter((c) => JSON.stringify(a[c]) !== JSON.stringify(b[c]));
        lines.push(`${table} ${key(row)} changed: ${cols.map((c) => `${c} ${cut(a[c])} → ${cut(b[c])}`).join('; ')}`);
      } else lines.push(`${table} - ${row.slice(0, 600)}`);
    }
    for (const row of addedByKey.values()) lines.push(`${table} + ${row.slice(0, 600)}`);
  }
  return lines.join('\n');
}

/** A short, readable rendering of a request for failure reports. */
export function describe(r: FuzzRequest): string {
  const body = r.body === undefined ? '' : Buffer.isBuffer(r.body) ? `<${r.body.length} bytes: ${JSON.stringify(r.body.subarray(0, 200).toString('latin1'))}>` : JSON.stringify(r.body.length > 300 ? `${r.body.slice(0, 300)}…(${r.body.length} chars)` : r.body);
  const parts = [`${r.method} ${JSON.stringify(r.path)}`];
  if (r.keys) parts.push(`as ${r.keys.ak}`);
  if (r.contentType !== undefined) parts.push(`content-type ${JSON.stringify(r.contentType)}`);
  if (r.signed) parts.push(`signed over ${JSON.stringify({ ...r.signed, secret: r.signed.secret ? '<other secret>' : undefined })}`);
  if (r.date !== undefined) parts.push(`${r.dateHeader ?? 'Date'} ${JSON.stringify(r.date)}`);
  if (r.version !== undefined) parts.push(`version ${JSON.stringify(r.version)}`);
  if (r.tamper) parts.push('signature tampered after signing');
  if (r.authorization !== undefined) parts.push(`Authorization ${JSON.stringify(r.authorization)}`);
  if (r.headers) parts.push(`headers ${JSON.stringify(r.headers)}`);
  if (body) parts.push(`body ${body}`);
  return parts.join(', ');
}
