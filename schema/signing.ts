// Backend.AI's HMAC-SHA256 request signing (API.md "Request signing"), shared by the manager
// (verify) and the SDK (sign) so both sides compute the very same bytes.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** The API version flotilla speaks (Backend.AI 22.03's). */
export const API_VERSION = 'v6.20220315';

/** What the signature covers, each value exactly as it travels in the request. */
export interface SignatureInput {
  method: string;
  /** Raw request target: path plus `?query`, as sent on the request line. */
  pathWithQuery: string;
  /** The `Date` (or `X-BackendAI-Date`) header string. */
  date: string;
  /** The `Host` header value. */
  host: string;
  /** The `Content-Type` header, if any; parameters and case do not matter. */
  contentType?: string | null;
  /** The `X-BackendAI-Version` header. */
  version: string;
  secretKey: string;
}

// The body is never signed (API.md): the last line is always the hash of nothing.
const EMPTY_BODY_HASH = createHash('sha256').update('').digest('hex');

/** Content type as it enters the signature: lowercased media type, parameters dropped. */
function signedContentType(raw: string | null | undefined): string {
  const mediaType = (raw ?? '').split(';')[0].trim().toLowerCase();
  return mediaType || 'application/octet-stream';
}

function utcDay(d: Date): string {
  return d.toISOString().slice(0, 10).replace(/-/g, '');
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function computeSignature(i: SignatureInput, date: Date): string {
  const stringToSign = [
    i.method.toUpperCase(), i.pathWithQuery, i.date,
    `host:${i.host}`, `content-type:${signedContentType(i.contentType)}`, `x-backendai-version:${i.version}`,
    EMPTY_BODY_HASH,
  ].join('\n');
  return createHmac('sha256', signingKey(i.secretKey, utcDay(date), i.host)).update(stringToSign).digest('hex');
}

// The signing key changes once a day per secret and host: derived once, not per request (two of
// the three HMACs a request costs). Bounded: cleared when full.
const SIGNING_KEYS_MAX = 1024;
const signingKeys = new Map<string, Buffer>();
function signingKey(secret: string, day: string, host: string): Buffer {
  const k = `${day}\n${host}\n${secret}`;
  let key = signingKeys.get(k);
  if (!key) {
    if (signingKeys.size >= SIGNING_KEYS_MAX) signingKeys.clear();
    key = hmac(hmac(secret, day), host);
    signingKeys.set(k, key);
  }
  return key;
}

/**
 * Sign a request; returns the `Authorization` header value and the bare hex signature.
 * Throws a RangeError when `date` is neither ISO 8601 nor an HTTP date.
 */
export function signRequest(i: SignatureInput & { accessKey: string }): { authorization: string; signature: string } {
  const date = parseRequestDate(i.date);
  if (!date) throw new RangeError(`unparseable request date: ${JSON.stringify(i.date)}`);
  const signature = computeSignature(i, date);
  return { authorization: `BackendAI signMethod=HMAC-SHA256, credential=${i.accessKey}:${signature}`, signature };
}

/** Check a received signature in constant time; false also for an unparseable date. */
export function verifySignature(i: SignatureInput & { signature: string }): boolean {
  const date = parseRequestDate(i.date);
  if (!date) return false;
  const expected = Buffer.from(computeSignature(i, date));
  const given = Buffer.from(i.signature.toLowerCase());
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * Parse `BackendAI signMethod=HMAC-SHA256, credential=<access key>:<hex signature>`.
 * Spacing, parameter order and case of the scheme and method are free (Backend.AI's server
 * is as lenient); any method other than HMAC-SHA256, a duplicate or missing parameter, or a
 * signature that is not 64 hex digits gives undefined.
 */
export function parseAuthorization(header: string | null | undefined): { accessKey: string; signature: string } | undefined {
  const m = /^(\S+)\s+(.*)$/s.exec((header ?? '').trim());
  if (!m || m[1].toLowerCase() !== 'backendai') return undefined;
  const params = new Map<string, string>();
  for (const piece of m[2].split(',')) {
    if (!piece.trim()) continue;
    const eq = piece.indexOf('=');
    if (eq < 0) return undefined;
    const key = piece.slice(0, eq).trim();
    if (params.has(key)) return undefined;
    params.set(key, piece.slice(eq + 1).trim());
  }
  if (params.get('signMethod')?.toUpperCase() !== 'HMAC-SHA256') return undefined;
  const cred = /^([^\s:]+):([0-9a-fA-F]{64})$/.exec(params.get('credential') ?? '');
  return cred ? { accessKey: cred[1], signature: cred[2].toLowerCase() } : undefined;
}

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$/i;
const IMF_FIXDATE = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const RFC_850 = /^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const ASCTIME = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/;

/** Build a UTC instant, rejecting out-of-range fields (Feb 30, 24:00, ...) rather than rolling over. */
function utc(year: number, month: number, day: number, h: number, mi: number, s: number, ms = 0, offsetMin = 0): Date | undefined {
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day); // not Date.UTC: it maps years 0-99 to 1900-1999
  d.setUTCHours(h, mi, s, ms);
  if (d.getUTCFullYear() !== year || d.getUTCMonth() !== month - 1 || d.getUTCDate() !== day
    || d.getUTCHours() !== h || d.getUTCMinutes() !== mi || d.getUTCSeconds() !== s) return undefined;
  return new Date(d.getTime() - offsetMin * 60_000);
}

const month = (name: string): number => MONTHS.indexOf(name.toLowerCase()) + 1;

/**
 * Parse a request date: ISO 8601 as Backend.AI's Python client sends it
 * (`2022-03-15T12:00:00.123456+00:00`; no offset means UTC; fractions beyond milliseconds are
 * truncated) or any of RFC 7231's three HTTP-date forms. Undefined when it is neither.
 */
export function parseRequestDate(s: string | null | undefined): Date | undefined {
  const raw = (s ?? '').trim();
  let m = ISO_8601.exec(raw);
  if (m) {
    const ms = m[7] ? Number(m[7].padEnd(3, '0').slice(0, 3)) : 0;
    let offsetMin = 0;
    if (m[8] && m[8].toUpperCase() !== 'Z') {
      const [oh, om] = [Number(m[8].slice(1, 3)), Number(m[8].slice(-2))];
      if (oh > 23 || om > 59) return undefined;
      offsetMin = (m[8][0] === '-' ? -1 : 1) * (oh * 60 + om);
    }
    return utc(+m[1], +m[2], +m[3], +m[4], +m[5], +m[6], ms, offsetMin);
  }
  if ((m = IMF_FIXDATE.exec(raw))) return month(m[2]) ? utc(+m[3], month(m[2]), +m[1], +m[4], +m[5], +m[6]) : undefined;
  if ((m = RFC_850.exec(raw))) {
    // RFC 7231 §7.1.1.1: a two-digit year more than 50 years ahead means the previous century.
    const now = new Date().getUTCFullYear();
    let year = now - (now % 100) + Number(m[3]);
    if (year > now + 50) year -= 100;
    return month(m[2]) ? utc(year, month(m[2]), +m[1], +m[4], +m[5], +m[6]) : undefined;
  }
  if ((m = ASCTIME.exec(raw))) return month(m[1]) ? utc(+m[6], month(m[1]), Number(m[2].trim()), +m[3], +m[4], +m[5]) : undefined;
  return undefined;
}
