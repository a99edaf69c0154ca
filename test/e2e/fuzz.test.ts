// The API fuzz suite of issue 5: generated malformed requests (bodies, headers, signatures,
// dates, names, paths, owner_access_key games) against a running manager and agent on the real
// PostgreSQL, Redis, etcd and Docker. For every route family at least 2,000 cases, each of them
// broken in at least one way chosen so that the request is certainly invalid; each case names
// the 4xx statuses it may get. Properties: every answer is one of those (never 5xx, never 2xx),
// a JSON problem body `{type, title}` without a stack trace; the manager still answers
// GET /health afterwards; no durable table changed (row counts and an md5 of the rows); no
// session actor was started or stopped.
//
// Cases are sampled with fast-check from a seed printed with any failure (FUZZ_SEED=<n> repeats
// a run) and sent 8 at a time. A failure lists the smallest failing cases, request and answer.
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { parseWorkPath } from '../../schema/file-rpc.ts';
import { PROBLEM_BASE } from '../../schema/errors.ts';
import { API_VERSION, parseRequestDate } from '../../schema/signing.ts';
import { startInProcess, type InProcessCluster } from '../helpers/in-process.ts';
import { describe, fingerprint, inPool, rowDiff, rowsOf, send, type FuzzAnswer, type FuzzRequest, type Keys } from '../helpers/fuzz.ts';
import { eventually, suite } from '../helpers/suite.ts';

const CASES = Number(process.env.FUZZ_CASES ?? 2000);
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 2_147_483_647);
const CONCURRENCY = 8;
const SMALL = { cpu: '0.25', mem: '128m' };
const VOID_GROUP = 'fz-void';
const USED_POLICY = 'fz-used';

interface Sess { id: string; name: string }
interface World {
  url: string; host: string;
  admin: Keys; a: Keys; b: Keys; inactive: Keys;
  /** The admin's RUNNING session (the only one with a container). */
  running: Sess;
  /** PENDING forever (their resource group has no agent): the admin's, user A's and user B's. */
  pending: Sess; aPending: Sess; bPending: Sess;
}
type Ctx = InProcessCluster & { w: World; stable: Record<string, string> };

/** One generated request and the statuses it may be answered with (all 4xx). */
interface Case { family: string; why: string; expect: number[]; req: () => FuzzRequest }

// The durable tables, row by row. Left out, because they change by themselves while the suite
// runs: periodic_jobs (the cron jobs stamp their runs), usage_records and usage_hourly (the
// usage job samples the running kernel), and agents' last_heartbeat, status_changed and
// snapshot (rewritten by every heartbeat); the agents' other columns are compared.
const TABLES: Record<string, string> = {
  sessions: 'SELECT * FROM sessions', kernels: 'SELECT * FROM kernels', session_events: 'SELECT * FROM session_events',
  keypairs: 'SELECT * FROM keypairs', users: 'SELECT * FROM users', resource_policies: 'SELECT * FROM resource_policies',
  resource_groups: 'SELECT * FROM resource_groups', keypair_resource_groups: 'SELECT * FROM keypair_resource_groups',
  vfolders: 'SELECT * FROM vfolders', vfolder_permissions: 'SELECT * FROM vfolder_permissions',
  agents: 'SELECT id, status, resource_group, addr, available_slots, images, version, first_contact FROM agents',
};

const t = suite<Ctx>('API fuzz', { timeoutMs: 240_000, hookTimeoutMs: 240_000 });

t.before(async (ctx) => {
  Object.assign(ctx, await startInProcess('fuzz'));
  const { client } = ctx;
  await client.admin.updateKeypair(ctx.ak, { rate_limit: 0 });
  await client.admin.createResourcePolicy(USED_POLICY, { max_concurrent_sessions: 5 });
  const user = async (n: string, policy?: string): Promise<Keys> => {
    const kp = await client.admin.createKeypair({ email: `${n}-${ctx.tag}@example.com`, rate_limit: 0, resource_policy: policy });
    return { ak: kp.access_key, sk: kp.secret_key };
  };
  const a = await user('fuzz-a', USED_POLICY);
  const b = await user('fuzz-b');
  const inactive = await user('fuzz-inactive');
  await client.admin.deactivateKeypair(inactive.ak);
  await client.admin.createResourceGroup(VOID_GROUP, { description: 'no agent: sessions here stay PENDING' });
  await client.admin.allowResourceGroup(VOID_GROUP, [a.ak, b.ak, inactive.ak]);
  const { Client } = await import('../../runtime/sdk/index.ts');
  const as = (k: Keys) => new Client({ endpoint: ctx.m.url, accessKey: k.ak, secretKey: k.sk });
  const pend = async (c: InstanceType<typeof Client>, name: string): Promise<Sess> => {
    const s = await c.sessions.create({ name, image: 'python', resources: SMALL, enqueueOnly: true, resourceGroup: VOID_GROUP });
    return { id: s.sessionId, name };
  };
  const run = await client.sessions.create({ name: 'fz-running', image: 'python', resources: SMALL });
  assert.is(run.status, 'RUNNING');
  const url = new URL(ctx.m.url);
  ctx.w = {
    url: ctx.m.url, host: url.host, admin: { ak: ctx.ak, sk: ctx.sk }, a, b, inactive,
    running: { id: run.sessionId, name: 'fz-running' },
    pending: await pend(client, 'fz-pending'), aPending: await pend(as(a), 'fz-a-pending'), bPending: await pend(as(b), 'fz-b-pending'),
  };
  // The scheduler notes once why the PENDING ones wait; after that, nothing changes by itself.
  await eventually(async () => (await ctx.stores.db.query(`SELECT count(*)::int AS n FROM sessions WHERE status = 'PENDING' AND status_info IS NOT NULL`)).rows[0].n === 3, 15_000, 'pending reasons noted');
  await new Promise((r) => setTimeout(r, 1500));
  const first = await fingerprint(ctx.stores.db, TABLES);
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await fingerprint(ctx.stores.db, TABLES), first, 'the fingerprinted tables are stable when nobody calls');
});
t.after(async (ctx) => { await ctx.stop?.(); });

// ---------------------------------------------------------------------------------------------
// Building blocks

const HEX = '0123456789abcdef';
const hex = (n: number) => fc.string({ unit: fc.constantFrom(...HEX), minLength: n, maxLength: n });
const upperAlnum = fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789');
/** A well-formed access key that belongs to nobody. */
const strangerKey = fc.string({ unit: upperAlnum, minLength: 18, maxLength: 18 }).map((s) => `AKZZ${s.slice(2)}`);
const NAME_RE = /^[a-zA-Z0-9_.-]{4,64}$/;
/** A valid session name no session has. */
const missingName = hex(12).map((h) => `nx-${h}`);
const missingUuid = fc.uuid();
/** Header-safe text: what node lets through in a header value (Latin-1 bytes included). */
const HEADER_SAFE = /^[\t\x20-\x7e\x80-\xff]*$/;
const latin1 = (max = 60) => fc.string({ unit: fc.integer({ min: 0x20, max: 0xff }).filter((c) => c !== 0x7f).map((c) => String.fromCharCode(c)), maxLength: max });
const NASTY = ['', ' ', '..', '../..', '../../etc/passwd', '/etc/passwd', '%00', '\u0000', 'null', 'undefined', '{}', '[]', '<script>alert(1)</script>',
  "' OR 1=1 --", '${jndi:ldap://x}', '{{7*7}}', '\u202e', '💥', 'ｆｕｌｌ', 'a\nb', '\\\\', 'NaN', '-1', '1e309', '\uFEFF', 'AKIAIOSFODNN7EXAMPLE'];
/** Any text, of every kind fast-check makes (well-formed UTF-16 only: JSON and URLs need it). */
const junk = fc.oneof(
  fc.string({ maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 20 }), fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom(...NASTY), latin1(30),
).filter((s) => !/[\uD800-\uDFFF]/.test(s.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, '')));
/** Any JSON value but a string (or null, which the schemas take for "unset"). */
const nonString = fc.oneof(
  fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(),
  fc.array(fc.jsonValue({ maxDepth: 1 }), { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 }),
);
const nonBool = fc.oneof(fc.integer(), fc.string({ maxLength: 8 }), fc.constantFrom('true', 'false', 1, 0), fc.array(fc.boolean(), { maxLength: 2 }), fc.object({ maxDepth: 1 }));
const tooLong = (min: number) => fc.string({ minLength: min, maxLength: min + 50, unit: fc.constantFrom(...'abcXYZ019_.-') });
const badInt = (min: number, max: number) => fc.oneof(
  fc.integer({ min: -2_000_000_000, max: min - 1 }), fc.integer({ min: max + 1, max: Number.MAX_SAFE_INTEGER }),
  fc.double({ noNaN: true, noDefaultInfinity: true, min: min + 0.01, max: Math.min(max, 1e6) - 0.01 }).filter((d) => !Number.isInteger(d)),
  fc.string({ maxLength: 8 }), fc.boolean(), fc.array(fc.nat(), { maxLength: 2 }),
);
/** A path segment in raw URL form: percent-encoded junk, or raw Latin-1/odd characters. */
const rawSegment = fc.oneof(
  junk.filter((s) => s.length > 0).map(encodeURIComponent),
  fc.string({ unit: fc.integer({ min: 0x21, max: 0xff }).filter((c) => ![0x2f, 0x3f, 0x23, 0x7f].includes(c)).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 30 }),
  fc.constantFrom('..', '.', '%2e%2e', '%2E%2E%2F%2E%2E', '..%2F..%2Fadmin%2Fkeypairs', '%2F', '%00', '%', '%zz', '%E0%A4%A', '%C0%AF', '%FF%FE', '~', '*', '\\..\\..', '%5C', 'a%20b', '%0d%0aX-Injected:%201'),
);
const enc = encodeURIComponent;
const withQuery = (path: string, q: string) => `${path}${path.includes('?') ? '&' : '?'}${q}`;
const json = (v: unknown) => JSON.stringify(v);
const pick = <T>(...xs: T[]) => fc.constantFrom<T>(...xs);
/** Decode a raw path segment as the router would, or undefined when it cannot. */
const decoded = (seg: string) => { try { return decodeURIComponent(seg); } catch { return undefined; } };
/**
 * The statuses for a path parameter sent raw: the router refuses one it cannot decode or one
 * with bytes outside ASCII (400) before any route runs, and the manager one holding a NUL (400);
 * one longer than the router's 100-character limit gets 414 (the limit counts the decoded
 * parameter, so an encoded one that is long only on the wire gets the route's own answer);
 * otherwise the route's own answer.
 */
const paramExpect = (raw: string, routed: number[]): number[] =>
  decoded(raw) === undefined || /[^\x21-\x7e]/.test(raw) || decoded(raw)!.includes('\u0000') ? [400] : raw.length > 100 ? [414, ...routed] : routed;

// ---------------------------------------------------------------------------------------------
// Breakers of the signature layer: each one alone makes any request fail authentication.

interface Break { why: string; apply: (r: FuzzRequest) => FuzzRequest; expect: number[] }
const br = (why: string, apply: (r: FuzzRequest) => FuzzRequest, expect = [401]): Break => ({ why, apply, expect });

function mediaType(ct: string | undefined | null): string { return (ct ?? '').split(';')[0].trim().toLowerCase() || 'application/octet-stream'; }
const isoAt = (ms: number) => new Date(Date.now() + ms).toISOString();
const httpAt = (ms: number) => new Date(Date.now() + ms).toUTCString();
const pythonAt = (ms: number, offsetMin: number) => {
  // 2022-03-15T21:00:00.123456+09:00: the instant written in another zone, as Python's client may.
  const d = new Date(Date.now() + ms + offsetMin * 60_000).toISOString().replace('Z', '');
  const sign = offsetMin < 0 ? '-' : '+';
  const abs = Math.abs(offsetMin);
  return `${d}456${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
};
const SKEW = 15 * 60_000;
/** Farther than 15 minutes from now (with a margin for the time the case waits to be sent). */
const staleOffset = fc.oneof(fc.integer({ min: SKEW + 60_000, max: 30 * 365 * 86400_000 }), fc.integer({ min: SKEW + 60_000, max: 3 * SKEW }))
  .chain((ms) => fc.constantFrom(ms, -ms));
const wrongFormatNow = fc.constantFrom<Array<() => string>>(
  () => String(Date.now()), () => String(Math.floor(Date.now() / 1000)), () => new Date().toString(), () => new Date().toLocaleString('en-US'),
  () => new Date().toISOString().slice(0, 10), () => new Date().toISOString().replace(/-/g, '/'), () => new Date().toISOString().replace('T', 'T ').replace(/:/g, '.'),
  () => new Date().toISOString().slice(0, 16), () => new Date().toISOString().replace('Z', '+25:00'), () => new Date().toISOString().replace('Z', '+00:99'),
  () => new Date().toUTCString().replace('GMT', 'UTC'), () => new Date().toUTCString().replace(/^\w+, /, ''), () => new Date().toISOString().replace(/T\d\d/, 'T24'),
  () => new Date().toISOString().replace(/-\d\d-/, '-13-'), () => new Date().toISOString().replace(/-(\d\d)T/, '-32T'), () => `${new Date().toISOString()} `.repeat(2).trim(),
);

function authBreak(w: World): fc.Arbitrary<Break> {
  const others = [w.admin, w.a, w.b, w.inactive];
  const realAk = fc.constantFrom(...others.map((k) => k.ak));
  const structuredAuth = fc.record({
    scheme: fc.oneof(pick('BackendAI', 'backendai', 'Bearer', 'Basic', 'AWS4-HMAC-SHA256', ''), latin1(12)),
    method: fc.oneof(pick('HMAC-SHA256', 'HMAC-SHA1', 'hmac-md5', 'HMAC-SHA512', 'none', ''), latin1(12)),
    ak: fc.oneof(realAk, strangerKey, latin1(25), pick('', ':', 'AK')),
    sig: fc.oneof(hex(64), hex(63), hex(65), hex(64).map((h) => `${h.slice(0, 63)}g`), latin1(70), pick('')),
    sep: pick(', ', ',', ' , ', ',,', ', credential=x, '),
  }).map(({ scheme, method, ak, sig, sep }) => `${scheme} signMethod=${method}${sep}credential=${ak}:${sig}`);
  const literal = (h: string) => br(`Authorization ${JSON.stringify(h)}`, (r) => ({ ...r, authorization: h }));
  return fc.oneof(
    fc.constant(br('no Authorization header', (r) => ({ ...r, authorization: null }))),
    fc.oneof(latin1(120), structuredAuth, fc.constantFrom('BackendAI', 'BackendAI signMethod=HMAC-SHA256', `BackendAI credential=${w.admin.ak}:${'0'.repeat(64)}`,
      `BackendAI signMethod=HMAC-SHA256, signMethod=HMAC-SHA256, credential=${w.admin.ak}:${'a'.repeat(64)}`)).filter((h) => HEADER_SAFE.test(h)).map(literal),
    fc.string({ minLength: 16, maxLength: 60 }).map((secret) => br('signed with another secret', (r) => ({ ...r, signed: { ...r.signed, secret } }))),
    fc.tuple(fc.nat(63), fc.integer({ min: 1, max: 15 })).map(([pos, d]) => br(`signature digit ${pos} changed by ${d}`, (r) => ({
      ...r, tamper: (h) => {
        const at = h.length - 64 + pos;
        return h.slice(0, at) + HEX[(HEX.indexOf(h[at]) + d) % 16] + h.slice(at + 1);
      },
    }))),
    fc.constantFrom(...others).map((k) => br(`credential of ${k.ak} over its own signature`, (r) => ({ ...r, signed: { ...r.signed, accessKey: k.ak === r.keys?.ak ? w.b.ak === k.ak ? w.a.ak : w.b.ak : k.ak } }))),
    strangerKey.map((ak) => br(`unknown access key ${ak}`, (r) => ({ ...r, keys: { ak, sk: 'x'.repeat(40) } }))),
    fc.constant(br('a deactivated keypair, correctly signed', (r) => ({ ...r, keys: w.inactive }))),
    pick('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'get').map((m) => br(`signed as method ${m}`, (r) => ({ ...r, signed: { ...r.signed, method: m.toUpperCase() === r.method ? (r.method === 'GET' ? 'POST' : 'GET') : m } }))),
    fc.oneof(pick('/', '/session', '?', '/x', '%20'), fc.string({ minLength: 1, maxLength: 5 })).map((suffix) => br(`signed over the path plus ${JSON.stringify(suffix)}`, (r) => ({ ...r, signed: { ...r.signed, path: r.path + suffix } }))),
    fc.oneof(pick('localhost', '127.0.0.1', '127.0.0.1:1', '[::1]', ''), latin1(20)).map((h) => br(`signed for host ${JSON.stringify(h)}`, (r) => ({ ...r, signed: { ...r.signed, host: h === w.host ? `${h}x` : h } }))),
    pick('application/json', 'text/plain', 'application/octet-stream', 'multipart/form-data', 'image/png').map((ct) => br(`signed with content type ${ct}`, (r) => ({
      ...r, signed: { ...r.signed, contentType: mediaType(ct) === mediaType(r.contentType) ? (mediaType(ct) === 'image/png' ? 'text/html' : 'image/png') : ct },
    }))),
    fc.constant(br('no Date header', (r) => ({ ...r, date: null }))),
    fc.oneof(latin1(40), junk).filter((d) => HEADER_SAFE.test(d) && !parseRequestDate(d)).map((d) => br(`Date ${JSON.stringify(d)}`, (r) => ({ ...r, date: d }))),
    wrongFormatNow.map((f) => br(`Date in a wrong format (${f.toString()})`, (r) => ({ ...r, date: f() }))),
    fc.tuple(staleOffset, pick('iso', 'http', 'python'), fc.integer({ min: -720, max: 840 }), pick<'Date' | 'X-BackendAI-Date'>('Date', 'X-BackendAI-Date')).map(([ms, format, zone, header]) =>
      br(`${header} ${Math.round(ms / 60_000)} minutes off (${format})`, (r) => {
        const d = format === 'iso' ? isoAt(ms) : format === 'http' ? httpAt(ms) : pythonAt(ms, zone);
        // X-BackendAI-Date wins over Date: a fresh Date beside a stale X-BackendAI-Date changes nothing.
        return { ...r, date: d, dateHeader: header, headers: header === 'X-BackendAI-Date' ? { ...r.headers, Date: isoAt(0) } : r.headers };
      })),
    fc.integer({ min: 1, max: 600 }).map((s) => br(`signed with a Date ${s} s earlier than the one sent`, (r) => ({ ...r, signed: { ...r.signed, date: isoAt(-s * 1000) } }))),
    fc.constant(br('no X-BackendAI-Version header', (r) => ({ ...r, version: null }))),
    fc.constant(br('an empty X-BackendAI-Version header', (r) => ({ ...r, version: '' }))),
    fc.oneof(pick('v5.20191215', 'v6.20220316', 'v4.20190615', 'v6', ''), latin1(12)).filter((v) => v !== API_VERSION).map((v) => br(`signed with version ${JSON.stringify(v)}`, (r) => ({ ...r, signed: { ...r.signed, version: v } }))),
  );
}

/**
 * owner_access_key games for a route that reads it (query, or body for JSON bodies): user A
 * acting for someone else (403); a value that is no access key (400).
 */
function ownerBreak(w: World, inBody: boolean): fc.Arbitrary<Break> {
  const put = (r: FuzzRequest, v: unknown): FuzzRequest => {
    if (inBody && typeof r.body === 'string') return { ...r, body: json({ ...JSON.parse(r.body), owner_access_key: v }) };
    return { ...r, path: Array.isArray(v) ? withQuery(r.path, v.map((x) => `owner_access_key=${enc(String(x))}`).join('&')) : withQuery(r.path, `owner_access_key=${enc(String(v))}`) };
  };
  const badKey = fc.oneof(junk, strangerKey.map((k) => k.toLowerCase()), strangerKey.map((k) => `${k}X`), strangerKey.map((k) => k.slice(0, 19)))
    .filter((s) => !/^AK[A-Z0-9]{18}$/.test(s));
  return fc.oneof(
    fc.constantFrom(w.admin, w.b).map((k) => br(`user A acting for ${k.ak}`, (r) => put({ ...r, keys: w.a }, k.ak), [403])),
    fc.tuple(badKey, pick(w.admin, w.a)).map(([v, k]) => br(`owner_access_key ${JSON.stringify(v)}`, (r) => put({ ...r, keys: k }, v), [400])),
    ...(inBody
      ? [fc.tuple(nonString, pick(w.admin, w.a)).map(([v, k]) => br(`owner_access_key ${JSON.stringify(v)} (not a string)`, (r) => put({ ...r, keys: k }, v), [400]))]
      : [fc.tuple(fc.array(pick(w.admin.ak, w.b.ak, 'x'), { minLength: 2, maxLength: 3 }), pick(w.admin, w.a)).map(([v, k]) => br(`owner_access_key given ${v.length} times`, (r) => put({ ...r, keys: k }, v), [400, 403]))]),
  );
}

/** Body-layer breaks that refuse a JSON request before it is even authenticated. */
function bodyBreak(limitBytes = 1024 * 1024, hugeWeight = 2): fc.Arbitrary<Break> {
  const w = (arbitrary: fc.Arbitrary<Break>, weight = 10) => ({ arbitrary, weight });
  return fc.oneof(
    w(fc.nat(10_000).map((cut) => br('the JSON body cut short', (r) => {
      const body = typeof r.body === 'string' && r.body.length > 1 ? r.body : '{"a": 1}';
      return { ...r, body: body.slice(0, 1 + (cut % (body.length - 1))), contentType: r.contentType ?? 'application/json' };
    }, [400]))),
    w(fc.oneof(pick("{'name': 'x'}", '{name: "x"}', '{"a": 1,}', '{"a": NaN}', '{"a": undefined}', '[1, 2', '{"a": 01}', '{"a": "\\x41"}', '{}{}', '\u0000', 'nul'), latin1(40).filter((s) => {
      if (!s.trim()) return false;
      try { JSON.parse(s); return false; } catch { return true; }
    })).map((b) => br(`body ${JSON.stringify(b)} (not JSON)`, (r) => ({ ...r, body: b, contentType: 'application/json' }), [400]))),
    w(fc.tuple(pick('application/xml', 'text/html', 'application/x-www-form-urlencoded', 'image/png', 'text/csv', 'foo/bar', 'application/octet-stream'), fc.boolean()).map(([ct, keep]) =>
      br(`content type ${ct}`, (r) => ({ ...r, contentType: ct, body: keep && typeof r.body === 'string' && r.body ? r.body : '{"a": 1}' }), [400, 415]))),
    w(fc.constant(br('a body without a content type', (r) => ({ ...r, contentType: undefined, body: typeof r.body === 'string' && r.body ? r.body : '{"a": 1}' }), [400, 415]))),
    w(fc.integer({ min: 1, max: 512 * 1024 }).map((extra) => br(`a body of ${limitBytes + extra} bytes`, (r) => ({
      ...r, contentType: r.contentType ?? 'application/json', body: json({ tag: 'x'.repeat(limitBytes + extra) }),
    }), [413])), hugeWeight),
  );
}

/** Apply a break to a request made by a template (the template's own statuses do not matter then). */
const broken = (family: string, what: string, req: () => FuzzRequest, b: Break): Case => ({ family, why: `${what}: ${b.why}`, expect: b.expect, req: () => b.apply(req()) });

// ---------------------------------------------------------------------------------------------
// The route families

/** POST /session: a request that would create a session but for one thing. */
function createCases(w: World): fc.Arbitrary<Case> {
  const F = 'create';
  const base = fc.record({
    owner: pick(w.admin, w.a),
    name: fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789_.-'), minLength: 1, maxLength: 20 }).map((s) => `fz-${s}`),
    noise: fc.record({
      type: pick('interactive', 'batch', null), clusterMode: pick('single-node', null), maxWaitSeconds: fc.oneof(fc.constant(null), fc.integer({ min: 0, max: 3600 })),
      tag: fc.oneof(fc.constant(null), fc.string({ maxLength: 20 })), domain: pick(null, 'default'), group: pick(null, 'default'), unknown_key: pick<unknown>(null, 1, 'x'),
      reuseIfExists: pick(null, false), startupCommand: pick(null, 'echo hi'),
    }, { requiredKeys: [] }),
    ct: pick('application/json', 'application/json; charset=utf-8', 'text/plain'),
  });
  type Body = Record<string, any>;
  const make = (b: { owner: Keys; name: string; noise: Body; ct: string }, edit: (body: Body) => void, keys = b.owner): () => FuzzRequest => () => {
    // In the resource group without agents: a session created by mistake stays PENDING and starts no container.
    const body: Body = { name: b.name, image: 'python', enqueueOnly: true, config: { resources: { ...SMALL }, scalingGroup: VOID_GROUP }, ...b.noise };
    edit(body);
    return { method: 'POST', path: '/session', keys, contentType: b.ct, body: json(body) };
  };
  const field = (keys: string[], bad: fc.Arbitrary<unknown>) => fc.tuple(fc.constantFrom(...keys), bad).map(([k, v]) => ({ why: `${k}: ${json(v)?.slice(0, 80)}`, edit: (body: Body) => { body[k] = v; } }));
  const cfg = (k: string, bad: fc.Arbitrary<unknown>) => bad.map((v) => ({ why: `config.${k}: ${json(v)?.slice(0, 80)}`, edit: (body: Body) => { body.config[k] = v; } }));
  const schemaBreak = fc.oneof(
    field(['name', 'sessionName', 'session_name', 'clientSessionToken'], fc.oneof(nonString, tooLong(65))),
    field(['image', 'lang'], fc.oneof(nonString, tooLong(257))),
    field(['type', 'sessionType', 'session_type'], fc.oneof(nonString, junk.filter((s) => s !== 'interactive' && s !== 'batch'))),
    field(['clusterSize', 'cluster_size'], badInt(1, 64)),
    field(['clusterMode', 'cluster_mode'], fc.oneof(nonString, junk.filter((s) => s !== 'single-node' && s !== 'multi-node'))),
    field(['config'], fc.oneof(fc.integer(), fc.boolean(), fc.string({ maxLength: 10 }), fc.array(fc.nat(), { maxLength: 2 }))),
    cfg('resources', fc.oneof(fc.integer(), fc.string({ maxLength: 10 }), fc.tuple(pick('cpu', 'mem', 'cuda.device'), fc.oneof(fc.boolean(), fc.constant(null), fc.object({ maxDepth: 1 }), fc.array(fc.nat(), { maxLength: 1 }))).map(([k, v]) => ({ [k]: v })), tooLong(65).map((k) => ({ [`Z${k}`]: 1 })))),
    cfg('mounts', fc.oneof(fc.string({ maxLength: 5 }), fc.array(nonString, { minLength: 1, maxLength: 3 }), fc.array(fc.constant('v'), { minLength: 65, maxLength: 70 }))),
    cfg('mount_map', fc.oneof(fc.string({ maxLength: 5 }), fc.dictionary(fc.string({ maxLength: 5 }), nonString, { minKeys: 1, maxKeys: 2 }))),
    cfg('environ', fc.oneof(fc.string({ maxLength: 5 }), fc.dictionary(junk.filter((k) => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || k.length > 256), fc.constant('v'), { minKeys: 1, maxKeys: 2 }), fc.dictionary(pick('A', 'PATH'), nonString, { minKeys: 1, maxKeys: 1 }))),
    cfg('scalingGroup', fc.oneof(nonString, tooLong(65))),
    field(['enqueueOnly', 'enqueue_only', 'reuseIfExists', 'reuse_if_exists'], nonBool),
    field(['maxWaitSeconds', 'max_wait_seconds'], badInt(0, 3600)),
    field(['startupCommand', 'startup_command', 'tag'], nonString),
    field(['domain', 'group', 'group_name', 'domain_name'], fc.oneof(nonString, tooLong(65))),
  ).map((x) => ({ ...x, expect: [400] }));
  const semantic = fc.oneof(
    fc.oneof(junk, latin1(64)).filter((n) => n.length > 0 && n.length <= 64 && !NAME_RE.test(n)).map((n) => ({ why: `name ${json(n)}`, expect: [400], edit: (b: Body) => { b.name = n; } })),
    pick('name', 'image').map((k) => ({ why: `no ${k}`, expect: [400], edit: (b: Body) => { delete b[k]; } })),
    fc.constant({ why: 'image ""', expect: [400], edit: (b: Body) => { b.image = ''; } }),
    junk.map((s) => `nx-image-${s}`.slice(0, 256)).map((img) => ({ why: `unknown image ${json(img)}`, expect: [404], edit: (b: Body) => { b.image = img; } })),
    fc.oneof(fc.integer({ min: 3, max: 100_000 }).map((cpu) => ({ cpu })), fc.integer({ min: 5, max: 1_000_000 }).map((g) => ({ mem: `${g}g` })), pick({ 'cuda.device': 1 }, { tpu: '2' }))
      .map((r) => ({ why: `resources ${json(r)} beyond every agent`, expect: [412], edit: (b: Body) => { b.config.resources = { ...b.config.resources, ...r }; b.config.scalingGroup = 'default'; } })),
    fc.tuple(pick('cpu', 'mem'), fc.oneof(pick('lots', '-1', '1x', '', '∞', 'NaN', '1e999', '0x10', '1..2'), fc.integer({ min: -1000, max: -1 }))).map(([k, v]) => ({ why: `resources.${k} ${json(v)}`, expect: [400], edit: (b: Body) => { b.config.resources[k] = v; } })),
    fc.integer({ min: 2, max: 64 }).map((n) => ({ why: `clusterSize ${n}`, expect: [400, 412], edit: (b: Body) => { b.clusterSize = n; } })),
    fc.array(fc.string({ minLength: 1, maxLength: 10 }), { minLength: 1, maxLength: 3 }).map((m) => ({ why: `mounts ${json(m)}`, expect: [400, 404], edit: (b: Body) => { b.config.mounts = m; } })),
    fc.dictionary(fc.string({ minLength: 1, maxLength: 5 }), fc.string({ maxLength: 5 }), { minKeys: 1, maxKeys: 2 }).map((m) => ({ why: `mount_map ${json(m)}`, expect: [400, 404], edit: (b: Body) => { b.config.mount_map = m; } })),
    junk.map((g) => `nx-${g}`.slice(0, 64)).map((g) => ({ why: `resource group ${json(g)}`, expect: [400], edit: (b: Body) => { b.config.scalingGroup = g; } })),
  );
  const conflict = base.chain((b) => (b.owner === w.admin ? pick(w.running.name, w.pending.name) : pick(w.aPending.name)).map((n) => ({ b, n }))).map(({ b, n }): Case => ({
    // User A's policy allows 5 live sessions; once full (only if some case did create one), the quota answers first.
    family: F, why: `the name of a live session (${n})`, expect: b.owner === w.a ? [409, 412] : [409], req: make(b, (body) => { body.name = n; delete body.reuseIfExists; }),
  }));
  return fc.oneof(
    { arbitrary: fc.tuple(base, schemaBreak).map(([b, x]): Case => ({ family: F, why: x.why, expect: x.expect, req: make(b, x.edit) })), weight: 6 },
    { arbitrary: fc.tuple(base, semantic).map(([b, x]): Case => ({ family: F, why: x.why, expect: [...x.expect], req: make(b, x.edit) })), weight: 4 },
    { arbitrary: conflict, weight: 1 },
    { arbitrary: fc.tuple(base, fc.oneof(fc.jsonValue({ maxDepth: 2 }).filter((v) => v === null || typeof v !== 'object' || Array.isArray(v)), fc.constant(undefined))).map(([b, v]): Case => ({
      family: F, why: `body ${json(v) ?? '(empty)'}`, expect: [400], req: () => ({ ...make(b, () => undefined)(), body: v === undefined ? '' : json(v) }),
    })), weight: 1 },
    { arbitrary: fc.tuple(base, fc.uint8Array({ minLength: 1, maxLength: 8 }).map((u) => Buffer.from(u.map((x) => 0x80 | x)))).map(([b, bytes]): Case => ({
      family: F, why: `non-UTF-8 bytes ${bytes.toString('hex')} in the name`, expect: [400],
      req: () => { const r = make(b, (body) => { body.name = 'NAME'; })(); return { ...r, body: Buffer.from((r.body as string).replace('"NAME"', `"fz${Buffer.from(bytes).toString('latin1')}"`), 'latin1') }; },
    })), weight: 1 },
    { arbitrary: fc.tuple(base, ownerBreak(w, true)).map(([b, x]) => broken(F, 'create', make(b, () => undefined), x)), weight: 2 },
    { arbitrary: fc.tuple(base, strangerKey).map(([b, k]): Case => ({ family: F, why: `admin acting for ${k}, who does not exist`, expect: [400, 403, 404], req: make(b, (body) => { body.owner_access_key = k; }, w.admin) })), weight: 1 },
    { arbitrary: fc.tuple(base, bodyBreak()).map(([b, x]) => broken(F, 'create', make(b, () => undefined), x)), weight: 2 },
    { arbitrary: fc.tuple(base, authBreak(w)).map(([b, x]) => broken(F, 'create', make(b, () => undefined), x)), weight: 2 },
  );
}

/** A ref that names no session of the caller: missing, another tenant's, too long, or odd. */
function foreignRef(w: World, caller: Keys): fc.Arbitrary<{ ref: string; expect: number[] }> {
  const theirs = caller === w.admin ? [w.bPending, w.aPending] : [w.running, w.pending, w.bPending];
  const mine = new Set((caller === w.admin ? [w.running, w.pending] : [w.aPending]).flatMap((s) => [s.name, s.id]));
  return fc.oneof(
    missingName.map((ref) => ({ ref, expect: [404] })),
    missingUuid.map((ref) => ({ ref, expect: [404] })),
    fc.constantFrom(...theirs.flatMap((s) => [s.name, s.id])).map((ref) => ({ ref: enc(ref), expect: [404] })),
    tooLong(65).map((ref) => ({ ref, expect: paramExpect(ref, [400]) })),
    rawSegment.filter((s) => { const d = decoded(s); return d === undefined || !mine.has(d); }).map((ref) => ({ ref, expect: paramExpect(ref, [400, 404]) })),
  );
}

/** GET/DELETE/PATCH /session/{ref}, GET /session: reads, destroy and restart. */
function readCases(w: World): fc.Arbitrary<Case> {
  const F = 'read';
  const caller = pick(w.admin, w.a);
  const ownPending = (k: Keys) => (k === w.admin ? w.pending : w.aPending);
  const refRoutes = pick(['GET', ''], ['DELETE', ''], ['DELETE', '?forced=true'], ['PATCH', ''], ['GET', '/logs'], ['POST', '/restart']);
  const missing = fc.tuple(caller, refRoutes).chain(([k, [m, suffix]]) => foreignRef(w, k).map(({ ref, expect }): Case => ({
    family: F, why: `${m} someone else's or no session ${json(ref)}`,
    // There is no POST /session/{ref}/restart (restart is PATCH): not found, or too long a parameter for the router.
    expect: suffix === '/restart' ? (paramExpect(ref, [404])[0] === 414 ? [404, 414] : paramExpect(ref, [404])) : expect,
    req: () => ({ method: m, path: `/session/${ref}${suffix}`, keys: k }),
  })));
  const badForced = fc.tuple(caller, fc.oneof(fc.string({ minLength: 1, maxLength: 8 }).map((s) => `x${s}`), pick('yes', 'no', 'maybe', '2', '-1', 'truee', '{}', '[]'))).map(([k, v]): Case => ({
    family: F, why: `DELETE own pending session with forced=${json(v)}`, expect: [400],
    req: () => ({ method: 'DELETE', path: `/session/${enc(ownPending(k).name)}?forced=${enc(v)}`, keys: k }),
  }));
  const restartPending = fc.tuple(caller, fc.boolean()).map(([k, byId]): Case => ({
    family: F, why: 'PATCH (restart) a PENDING session', expect: [400, 409],
    req: () => ({ method: 'PATCH', path: `/session/${byId ? ownPending(k).id : ownPending(k).name}`, keys: k }),
  }));
  const badList = fc.tuple(caller, fc.oneof(
    fc.oneof(junk, fc.string({ maxLength: 10 }).map((s) => s.toLowerCase())).filter((s) => !/^[A-Z_]+(,[A-Z_]+)*$/.test(s)).map((v) => `status=${enc(v)}`),
    fc.oneof(fc.integer({ min: -1000, max: 0 }), fc.integer({ min: 1001, max: 1e9 })).map((v) => `limit=${v}`),
    fc.oneof(pick('abc', '1.5', '2.25', 'NaN', 'Infinity', '0x', '1,2'), fc.string({ minLength: 1, maxLength: 5, unit: fc.constantFrom(...'abcxyz') })).map((v) => `limit=${enc(v)}`),
    fc.oneof(fc.integer({ min: -1e9, max: -1 }).map(String), pick('abc', '1.5', 'NaN', '-0.5')).map((v) => `offset=${enc(v)}`),
    tooLong(21).map((v) => `owner_access_key=${v}`),
  )).map(([k, q]): Case => ({ family: F, why: `GET /session?${q}`, expect: [400], req: () => ({ method: 'GET', path: `/session?${q}`, keys: k }) }));
  // Requests that would succeed (and, for DELETE and PATCH, change state) but for a broken signature or owner.
  const valid = fc.tuple(caller, pick(['GET', ''], ['GET', 'list'], ['DELETE', ''], ['PATCH', 'running'], ['GET', '/logs'])).map(([k, [m, what]]) => () => {
    const s = what === 'running' || (m === 'GET' && k === w.admin) ? w.running : ownPending(k);
    const path = what === 'list' ? '/session' : `/session/${s.name}${what === '/logs' ? '/logs' : ''}`;
    return { method: m, path, keys: what === 'running' ? w.admin : k };
  });
  return fc.oneof(
    { arbitrary: missing, weight: 8 },
    { arbitrary: badForced, weight: 1 },
    { arbitrary: restartPending, weight: 1 },
    { arbitrary: badList, weight: 3 },
    { arbitrary: fc.tuple(valid, authBreak(w)).map(([r, x]) => broken(F, r().method + ' ' + r().path, r, x)), weight: 4 },
    { arbitrary: fc.tuple(valid, ownerBreak(w, false)).map(([r, x]) => broken(F, r().method + ' ' + r().path, r, x)), weight: 2 },
  );
}

/** POST /session/{ref} (execute) and POST /session/{ref}/interrupt. */
function executeCases(w: World): fc.Arbitrary<Case> {
  const F = 'execute';
  const exec = (path: string, body: unknown, keys: Keys = w.admin, ct = 'application/json'): () => FuzzRequest => () => ({ method: 'POST', path, keys, contentType: ct, body: json(body) });
  const goodBody = fc.oneof(
    fc.record({ mode: fc.constant('query'), code: pick('print(1)', '1+1', ''), runId: fc.oneof(fc.constant(null), hex(16)) }),
    fc.record({ mode: fc.constant('batch'), code: pick('', 'x'), options: fc.constant({ exec: 'echo hi' }) }),
    fc.record({ mode: pick('continue', 'input'), code: pick('', 'line'), runId: hex(16).map((h) => `nx${h}`) }),
  );
  const running = `/session/${w.running.name}`;
  const schemaBad = fc.oneof(
    fc.oneof(junk.filter((m) => !['query', 'batch', 'continue', 'input'].includes(m)), nonString, pick('QUERY', 'complete', 'exec', ' query')).map((mode) => ({ mode, code: 'print(1)' })),
    fc.constant({ code: 'print(1)' }),
    nonString.map((code) => ({ mode: 'query', code })),
    fc.oneof(pick(''), tooLong(65), junk.filter((s) => s.length > 0 && !/^[A-Za-z0-9_.:-]+$/.test(s)), nonString).map((runId) => ({ mode: 'continue', code: '', runId })),
    fc.oneof(fc.string({ maxLength: 5 }), fc.integer(), fc.boolean()).map((options) => ({ mode: 'query', code: 'print(1)', options })),
  );
  const semanticBad = fc.oneof(
    fc.tuple(pick('continue', 'input'), pick(undefined, null, '')).map(([mode, runId]) => ({ why: `${mode} without a runId`, body: { mode, code: '', ...(runId === undefined ? {} : { runId }) } })),
    fc.tuple(pick('query', 'batch'), fc.oneof(fc.integer({ min: -1e6, max: -1 }), fc.double({ max: -0.001, noNaN: true, noDefaultInfinity: true }), pick<unknown>('abc', '-5', 'NaN', '1s', {}))).map(([mode, v]) => ({
      why: `${mode} with exec_timeout ${json(v)}`, body: { mode, code: 'print(1)', options: { exec: 'true', exec_timeout: v } },
    })),
    fc.tuple(pick('', null, undefined), pick<unknown>(undefined, 1, null, ['ls'])).map(([code, exec]) => ({ why: 'batch with neither options.exec nor code', body: { mode: 'batch', ...(code === undefined ? {} : { code }), options: exec === undefined ? {} : { exec } } })),
    fc.tuple(pick('continue', 'input'), hex(16)).map(([mode, h]) => ({ why: `${mode} of an unknown run`, body: { mode, code: mode === 'input' ? 'line' : '', runId: `nx${h}` } })),
  );
  const refs = fc.tuple(pick(w.admin, w.a), fc.boolean()).chain(([k, interrupt]) => foreignRef(w, k).map((f) => ({ k, interrupt, ...f })));
  // A request that would run code, or interrupt it, but for a broken signature or owner.
  const validRun = fc.tuple(goodBody.filter((b) => b.mode === 'query' || b.mode === 'batch'), fc.boolean()).map(([b, interrupt]) => (interrupt
    ? () => ({ method: 'POST', path: `${running}/interrupt`, keys: w.admin })
    : exec(running, b)));
  return fc.oneof(
    { arbitrary: schemaBad.map((b): Case => ({ family: F, why: `body ${json(b)}`, expect: [400], req: exec(running, b) })), weight: 5 },
    { arbitrary: semanticBad.map((x): Case => ({ family: F, why: x.why, expect: [400], req: exec(running, x.body) })), weight: 4 },
    { arbitrary: fc.tuple(goodBody, fc.boolean()).map(([b, interrupt]): Case => ({
      family: F, why: `${interrupt ? 'interrupt' : b.mode} in a PENDING session`, expect: [409],
      req: interrupt ? () => ({ method: 'POST', path: `/session/${w.pending.id}/interrupt`, keys: w.admin }) : exec(`/session/${w.pending.name}`, b),
    })), weight: 2 },
    { arbitrary: fc.tuple(refs, goodBody).map(([{ k, interrupt, ref, expect }, b]): Case => ({
      family: F, why: `${interrupt ? 'interrupt' : b.mode} in someone else's or no session ${json(ref)}`, expect,
      req: interrupt ? () => ({ method: 'POST', path: `/session/${ref}/interrupt`, keys: k }) : exec(`/session/${ref}`, b, k),
    })), weight: 4 },
    { arbitrary: fc.tuple(goodBody, bodyBreak(9 * 1024 * 1024, 1)).map(([b, x]) => broken(F, `execute ${b.mode}`, exec(running, b), x)), weight: 2 },
    { arbitrary: fc.tuple(validRun, authBreak(w)).map(([r, x]) => broken(F, 'run code', r, x)), weight: 4 },
    { arbitrary: fc.tuple(validRun, ownerBreak(w, false)).map(([r, x]) => broken(F, 'run code', r, x)), weight: 1 },
  );
}

/** A path that parseWorkPath refuses (traversal, outside /home/work, NUL, too long or deep). */
const badPath = (allowRoot: boolean) => fc.oneof(
  fc.tuple(fc.array(fc.constantFrom('a', 'b', '.', 'nx', '..', 'é'), { maxLength: 4 }), fc.array(fc.constantFrom('a', '..', 'etc', 'passwd'), { maxLength: 3 })).map(([x, y]) => [...x, '..', ...y].join('/')),
  pick('/etc/passwd', '/home/workx', '/home/work/../../etc/shadow', '/', '/proc/self/environ', '/home', '/home/work/..', '../home/work', '/home/work/a/../../..', 'a/\u0000/b', '\u0000', '/HOME/WORK/a', '//etc'),
  fc.string({ unit: fc.constantFrom('a', 'é', '💥'), minLength: 256, maxLength: 300 }),
  fc.integer({ min: 129, max: 200 }).map((n) => Array.from({ length: n }, () => 'd').join('/')),
  ...(allowRoot ? [] : [pick('', '.', './', '/home/work', '/home/work/', './.')]),
).filter((p) => { try { parseWorkPath(p, { allowRoot }); return false; } catch { return true; } });
/** A valid path below /home/work that does not exist (one of its names is nx-<random>). */
const missingPath = fc.tuple(fc.array(fc.oneof(fc.constantFrom('a', 'sub dir', 'ünï', '💥', '%41', '.hidden', '-', '~'), junk.filter((s) => s.length > 0 && !s.includes('/') && !s.includes('\0') && s !== '..' && s !== '.')), { maxLength: 3 }), hex(10), pick('', '/home/work/', './'))
  .map(([segs, h, prefix]) => `${prefix}${[...segs.slice(0, 1), `nx-${h}`, ...segs.slice(1)].join('/')}`)
  .filter((p) => { try { parseWorkPath(p); return true; } catch { return false; } });

/** POST /session/{ref}/upload, POST|GET /session/{ref}/download, GET /session/{ref}/files. */
function fileCases(w: World): fc.Arbitrary<Case> {
  const F = 'files';
  const run = `/session/${w.running.name}`;
  const multipart = (files: Array<{ name: string; data: string }>, opts: { truncate?: number; fieldsOnly?: boolean; wrongBoundary?: boolean } = {}) => {
    const boundary = `fz${Math.random().toString(16).slice(2)}`;
    const parts = files.map((f) => opts.fieldsOnly
      ? `--${boundary}\r\nContent-Disposition: form-data; name="field"\r\n\r\n${f.data}\r\n`
      : `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${f.name}"\r\nContent-Type: application/octet-stream\r\n\r\n${f.data}\r\n`);
    let body = Buffer.from(`${parts.join('')}--${boundary}--\r\n`, 'utf8');
    if (opts.truncate !== undefined) body = body.subarray(0, Math.max(1, Math.floor(body.length * opts.truncate)));
    return { body, contentType: `multipart/form-data; boundary=${opts.wrongBoundary ? 'other' : boundary}` };
  };
  // Filenames that survive the multipart header as they are (no quotes, backslashes or line breaks).
  const plainBadName = badPath(false).filter((p) => /^[\x20-\x7e]*$/.test(p) && !/["\\]/.test(p) && p.length < 1000);
  const goodFile = fc.record({ name: missingPath.filter((p) => /^[\x20-\x7e]*$/.test(p) && !/["\\]/.test(p)), data: fc.string({ maxLength: 50 }) });
  const upload = fc.oneof(
    fc.tuple(plainBadName, fc.array(goodFile, { maxLength: 2 }), fc.nat(2), fc.oneof(fc.constant(undefined), fc.double({ min: 0.05, max: 0.99, noNaN: true })))
      .map(([bad, good, at, truncate]): Case => {
        const files = [...good];
        files.splice(Math.min(at, files.length), 0, { name: bad, data: 'x' });
        return { family: F, why: `upload with a file named ${json(bad)}${truncate ? ', cut short' : ''}`, expect: [400], req: () => ({ method: 'POST', path: `${run}/upload`, keys: w.admin, ...multipart(files, { truncate }) }) };
      }),
    fc.array(fc.string({ maxLength: 20 }), { minLength: 1, maxLength: 3 }).map((d): Case => ({ family: F, why: 'upload with fields but no file', expect: [400], req: () => ({ method: 'POST', path: `${run}/upload`, keys: w.admin, ...multipart(d.map((data) => ({ name: '', data })), { fieldsOnly: true }) }) })),
    fc.array(goodFile, { minLength: 1, maxLength: 2 }).map((files): Case => ({ family: F, why: 'upload whose boundary is not the one declared', expect: [400], req: () => ({ method: 'POST', path: `${run}/upload`, keys: w.admin, ...multipart(files, { wrongBoundary: true }) }) })),
    fc.tuple(pick('application/json', 'text/plain', 'application/octet-stream', undefined), fc.string({ maxLength: 40 })).map(([ct, data]): Case => ({
      family: F, why: `upload as ${ct ?? 'no content type'}`, expect: [400, 415], req: () => ({ method: 'POST', path: `${run}/upload`, keys: w.admin, contentType: ct, body: ct === 'application/json' ? json({ files: [data] }) : data }),
    })),
    fc.array(goodFile, { minLength: 1, maxLength: 2 }).map((files): Case => ({ family: F, why: 'upload into a PENDING session', expect: [409], req: () => ({ method: 'POST', path: `/session/${w.pending.name}/upload`, keys: w.admin, ...multipart(files) }) })),
  );
  // Paths for listing and download: refused ones (400) or missing ones (404 from the agent).
  const paths = fc.array(fc.oneof(badPath(true).map((p) => ({ p, bad: true })), missingPath.map((p) => ({ p, bad: false }))), { minLength: 1, maxLength: 4 });
  const target = fc.oneof(
    { arbitrary: fc.constant({ ref: w.running.name, keys: w.admin, state: 'running' as const }), weight: 4 },
    { arbitrary: fc.constant({ ref: w.pending.id, keys: w.admin, state: 'pending' as const }), weight: 1 },
    { arbitrary: fc.tuple(pick(w.admin, w.a)).chain(([k]) => foreignRef(w, k).filter((f) => f.expect.length === 1 && f.expect[0] === 404).map((f) => ({ ref: f.ref, keys: k, state: 'foreign' as const }))), weight: 1 },
  );
  const expectFor = (state: 'running' | 'pending' | 'foreign', anyBad: boolean, checkFirst: boolean) =>
    state === 'foreign' ? [404] : checkFirst && anyBad ? [400] : state === 'pending' ? [409] : anyBad ? [400] : [404];
  const download = fc.tuple(target, paths, pick('POST', 'GET')).map(([tg, ps, m]): Case => {
    const anyBad = ps.some((x) => x.bad);
    // A NUL anywhere in a JSON body is refused as the body is read, before any lookup.
    const nul = ps.some((x) => x.p.includes('\u0000'));
    // download() checks every path before it asks for the main kernel.
    return { family: F, why: `${m} download of ${json(ps.map((x) => x.p.slice(0, 60)))} in a ${tg.state} session`, expect: nul ? [400] : expectFor(tg.state, anyBad, true),
      req: () => ({ method: m, path: `/session/${tg.ref}/download`, keys: tg.keys, contentType: 'application/json', body: json({ files: ps.map((x) => x.p) }) }) };
  });
  const downloadSchema = fc.tuple(fc.oneof(fc.constant({}), fc.constant({ files: [] }), nonString.map((files) => ({ files })), fc.array(nonString, { minLength: 1, maxLength: 2 }).map((files) => ({ files })), fc.constant({ files: Array.from({ length: 1001 }, (_, i) => `f${i}`) }), tooLong(4097).map((p) => ({ files: [p] }))), pick('POST', 'GET'))
    .filter(([b]) => !(Array.isArray((b as { files?: unknown }).files) && ((b as { files: unknown[] }).files).every((x) => typeof x === 'string') && ((b as { files: unknown[] }).files).length >= 1 && ((b as { files: unknown[] }).files).length <= 1000 && ((b as { files: string[] }).files).every((x) => x.length <= 4096)))
    .map(([b, m]): Case => ({ family: F, why: `${m} download with body ${json(b).slice(0, 80)}`, expect: [400], req: () => ({ method: m, path: `${run}/download`, keys: w.admin, contentType: 'application/json', body: json(b) }) }));
  const list = fc.tuple(target, fc.oneof(badPath(true).map((p) => ({ p, bad: true })), missingPath.map((p) => ({ p, bad: false }))), fc.boolean()).map(([tg, { p, bad }, inQuery]): Case => ({
    // list() checks the path before it asks for the main kernel.
    family: F, why: `list ${json(p.slice(0, 60))} (${inQuery ? 'query' : 'body'}) in a ${tg.state} session`,
    expect: p.length > 4096 && inQuery ? [400] : expectFor(tg.state, bad, true),
    req: () => (inQuery
      ? { method: 'GET', path: `/session/${tg.ref}/files?path=${enc(p)}`, keys: tg.keys }
      : { method: 'GET', path: `/session/${tg.ref}/files`, keys: tg.keys, contentType: 'application/json', body: json({ path: p }) }),
  }));
  const listSchema = nonString.map((p): Case => ({ family: F, why: `list with body path ${json(p)}`, expect: [400], req: () => ({ method: 'GET', path: `${run}/files`, keys: w.admin, contentType: 'application/json', body: json({ path: p }) }) }));
  const validFile = pick<() => FuzzRequest>(
    () => ({ method: 'GET', path: `${run}/files`, keys: w.admin }),
    () => ({ method: 'POST', path: `${run}/download`, keys: w.admin, contentType: 'application/json', body: json({ files: ['.'] }) }),
    () => ({ method: 'POST', path: `${run}/upload`, keys: w.admin, ...multipart([{ name: 'fuzz-should-not-exist.txt', data: 'x' }]) }),
  );
  return fc.oneof(
    { arbitrary: upload, weight: 4 },
    { arbitrary: download, weight: 4 },
    { arbitrary: downloadSchema, weight: 1 },
    { arbitrary: list, weight: 4 },
    { arbitrary: listSchema, weight: 1 },
    { arbitrary: fc.tuple(validFile, authBreak(w)).map(([r, x]) => broken(F, `${r().method} ${r().path}`, r, x)), weight: 3 },
    { arbitrary: fc.tuple(validFile, ownerBreak(w, false)).map(([r, x]) => broken(F, `${r().method} ${r().path}`, r, x)), weight: 1 },
  );
}

/** /admin/keypairs, /admin/resource-policies, /admin/jobs. */
function adminCases(w: World): fc.Arbitrary<Case> {
  const F = 'admin';
  const admin = w.admin;
  const req = (method: string, path: string, body?: unknown, keys = admin): () => FuzzRequest => () => (body === undefined
    ? { method, path, keys }
    : { method, path, keys, contentType: 'application/json', body: json(body) });
  const email = fc.tuple(hex(8)).map(([h]) => `fz-${h}@example.com`);
  const badEmail = fc.oneof(junk, nonString, tooLong(257).map((s) => `${s}@x`), pick('a@', '@b', 'a b@c', 'a@b@c', 'ab', 'x@\n', '')).filter((e) => typeof e !== 'string' || e.length < 3 || e.length > 256 || !/^[^@\s]+@[^@\s]+$/.test(e));
  const badPolicyName = fc.oneof(junk, tooLong(65), nonString).filter((n) => typeof n !== 'string' || !/^[a-zA-Z0-9_.-]{1,64}$/.test(n));
  const missingPolicy = hex(10).map((h) => `nx-${h}`);
  const badRate = badInt(0, 2_147_483_647);
  const extraKey = fc.tuple(fc.string({ minLength: 1, maxLength: 10 }).filter((k) => !['email', 'is_admin', 'resource_policy', 'rate_limit', 'is_active', '__proto__'].includes(k)), fc.jsonValue({ maxDepth: 1 }));
  const keypairCreate = fc.tuple(email, fc.oneof(
    badEmail.map((e) => ({ why: `email ${json(e)}`, edit: (b: Record<string, unknown>) => { b.email = e; } })),
    nonBool.map((v) => ({ why: `is_admin ${json(v)}`, edit: (b: Record<string, unknown>) => { b.is_admin = v; } })),
    fc.oneof(badPolicyName, missingPolicy).map((v) => ({ why: `resource_policy ${json(v)}`, edit: (b: Record<string, unknown>) => { b.resource_policy = v; } })),
    badRate.map((v) => ({ why: `rate_limit ${json(v)}`, edit: (b: Record<string, unknown>) => { b.rate_limit = v; } })),
    extraKey.map(([k, v]) => ({ why: `extra key ${json(k)}`, edit: (b: Record<string, unknown>) => { b[k] = v; } })),
    fc.constant({ why: 'no email', edit: (b: Record<string, unknown>) => { delete b.email; } }),
  )).map(([e, x]): Case => {
    const body: Record<string, unknown> = { email: e, rate_limit: 100 };
    x.edit(body);
    return { family: F, why: `create keypair: ${x.why}`, expect: [400], req: req('POST', '/admin/keypairs', body) };
  });
  const badAkSeg = fc.oneof(rawSegment, strangerKey.map((k) => k.toLowerCase()), tooLong(21)).filter((s) => { const d = decoded(s); return d === undefined || !/^AK[A-Z0-9]{18}$/.test(d); });
  const existing = pick(w.admin.ak, w.a.ak, w.b.ak, w.inactive.ak);
  const keypairChangeBad = fc.oneof(
    nonBool.map((v) => ({ is_active: v })), nonBool.map((v) => ({ is_admin: v })), badPolicyName.map((v) => ({ resource_policy: v })), badRate.map((v) => ({ rate_limit: v })),
    extraKey.map(([k, v]) => ({ [k]: v })), fc.oneof(fc.integer(), fc.string({ maxLength: 5 }), fc.array(fc.nat(), { maxLength: 2 })),
  );
  const keypairRoutes = fc.oneof(
    fc.tuple(badAkSeg, pick(['GET', ''], ['PATCH', ''], ['DELETE', ''], ['POST', '/deactivate'], ['POST', '/activate'])).map(([ak, [m, s]]): Case => ({
      family: F, why: `${m} keypair ${json(ak)}${s}`, expect: paramExpect(ak, [400, 404]), req: req(m, `/admin/keypairs/${ak}${s}`, m === 'PATCH' ? { is_active: true } : undefined),
    })),
    fc.tuple(strangerKey, pick(['GET', ''], ['PATCH', ''], ['DELETE', ''], ['POST', '/deactivate'], ['POST', '/activate']), pick({}, { is_active: false }, { rate_limit: 5 })).map(([ak, [m, s], body]): Case => ({
      family: F, why: `${m} missing keypair ${ak}${s}`, expect: [404], req: req(m, `/admin/keypairs/${ak}${s}`, m === 'PATCH' ? body : undefined),
    })),
    fc.tuple(existing, keypairChangeBad).map(([ak, body]): Case => ({ family: F, why: `PATCH keypair ${ak} with ${json(body)}`, expect: [400], req: req('PATCH', `/admin/keypairs/${ak}`, body) })),
    fc.tuple(existing, missingPolicy).map(([ak, p]): Case => ({ family: F, why: `PATCH keypair ${ak} to missing policy ${p}`, expect: [400], req: req('PATCH', `/admin/keypairs/${ak}`, { resource_policy: p }) })),
    pick(w.admin.ak, w.b.ak, w.a.ak).map((ak): Case => ({ family: F, why: `DELETE keypair ${ak}, which has live sessions`, expect: [409], req: req('DELETE', `/admin/keypairs/${ak}`) })),
  );
  const slotKey = fc.oneof(junk, tooLong(65)).filter((k) => !/^[a-z][a-z0-9_.]{0,63}$/.test(k) && k !== '__proto__');
  const policyFieldBad = fc.oneof(
    fc.tuple(pick('max_concurrent_sessions', 'max_vfolder_count', 'max_pending_session_count'), badInt(0, 1_000_000)).map(([k, v]) => ({ [k]: v })),
    fc.tuple(pick('idle_timeout', 'max_session_lifetime'), badInt(0, 10 * 365 * 86400)).map(([k, v]) => ({ [k]: v })),
    badInt(1, 1024).map((v) => ({ max_containers_per_session: v })),
    fc.oneof(fc.integer(), fc.string({ maxLength: 5 }), fc.array(fc.nat(), { maxLength: 2 }), slotKey.map((k) => ({ [k]: 1 })),
      fc.tuple(pick('cpu', 'mem'), fc.oneof(fc.integer({ min: -1000, max: -1 }), fc.boolean(), fc.constant(null), tooLong(65), pick('lots', '-1', '1x', 'NaN', '∞'))).map(([k, v]) => ({ [k]: v })),
    ).map((v) => ({ total_resource_slots: v })),
    extraKey.filter(([k]) => !['name', 'max_concurrent_sessions', 'total_resource_slots', 'max_pending_session_count', 'max_containers_per_session', 'idle_timeout', 'max_session_lifetime', 'max_vfolder_count'].includes(k)).map(([k, v]) => ({ [k]: v })),
  );
  const policyRoutes = fc.oneof(
    fc.tuple(hex(8), policyFieldBad).map(([h, bad]): Case => ({ family: F, why: `create policy with ${json(bad).slice(0, 80)}`, expect: [400], req: req('POST', '/admin/resource-policies', { name: `fz-${h}`, max_vfolder_count: 3, ...bad }) })),
    badPolicyName.map((n): Case => ({ family: F, why: `create policy named ${json(n)}`, expect: [400], req: req('POST', '/admin/resource-policies', { name: n }) })),
    fc.constant<Case>({ family: F, why: 'create policy without a name', expect: [400], req: req('POST', '/admin/resource-policies', { idle_timeout: 5 }) }),
    pick('default', USED_POLICY).map((n): Case => ({ family: F, why: `create policy ${n}, which exists`, expect: [409], req: req('POST', '/admin/resource-policies', { name: n, idle_timeout: 7 }) })),
    fc.tuple(pick('default', USED_POLICY), policyFieldBad).map(([n, bad]): Case => ({ family: F, why: `PATCH policy ${n} with ${json(bad).slice(0, 80)}`, expect: [400], req: req('PATCH', `/admin/resource-policies/${n}`, bad) })),
    fc.tuple(rawSegment.filter((s) => { const d = decoded(s); return d === undefined || !/^[a-zA-Z0-9_.-]{1,64}$/.test(d); }), pick('GET', 'PATCH', 'DELETE')).map(([n, m]): Case => ({
      family: F, why: `${m} policy ${json(n)}`, expect: paramExpect(n, [400, 404]), req: req(m, `/admin/resource-policies/${n}`, m === 'PATCH' ? { idle_timeout: 1 } : undefined),
    })),
    fc.tuple(missingPolicy, pick('GET', 'PATCH', 'DELETE')).map(([n, m]): Case => ({ family: F, why: `${m} missing policy ${n}`, expect: [404], req: req(m, `/admin/resource-policies/${n}`, m === 'PATCH' ? { idle_timeout: 1 } : undefined) })),
    pick('default', USED_POLICY).map((n): Case => ({ family: F, why: `DELETE policy ${n} (the default, or assigned)`, expect: [409], req: req('DELETE', `/admin/resource-policies/${n}`) })),
  );
  const jobRoutes = fc.oneof(
    rawSegment.filter((s) => { const d = decoded(s); return d === undefined || !/^[a-z-]{1,64}$/.test(d); }).map((n): Case => ({ family: F, why: `run job ${json(n)}`, expect: paramExpect(n, [400, 404]), req: req('POST', `/admin/jobs/${n}/run`) })),
    fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz-'), minLength: 1, maxLength: 30 }).map((s) => `nx-${s}`).map((n): Case => ({ family: F, why: `run missing job ${n}`, expect: [404], req: req('POST', `/admin/jobs/${n}/run`) })),
  );
  // As user A: every admin route, with good and bad bodies alike, is forbidden.
  const userRoutes = fc.tuple(fc.oneof(
    pick<[string, string]>(['GET', '/admin/keypairs'], ['GET', '/admin/resource-policies'], ['GET', '/admin/jobs'], ['GET', '/admin/agents'], ['POST', '/admin/jobs/usage-sample/run'],
      ['POST', '/admin/jobs/retention-prune/run'], ['GET', `/admin/keypairs/${w.a.ak}`], ['POST', `/admin/keypairs/${w.a.ak}/deactivate`], ['POST', `/admin/keypairs/${w.b.ak}/activate`],
      ['DELETE', `/admin/keypairs/${w.inactive.ak}`], ['DELETE', `/admin/resource-policies/${USED_POLICY}`], ['GET', '/admin/resource-policies/default']).map(([m, p]) => ({ m, p, body: undefined as unknown, seg: undefined as string | undefined })),
    fc.tuple(pick<[string, string]>(['POST', '/admin/keypairs'], ['PATCH', `/admin/keypairs/${w.a.ak}`], ['POST', '/admin/resource-policies'], ['PATCH', '/admin/resource-policies/default']),
      fc.oneof(fc.record({ email: email, is_admin: fc.constant(true), rate_limit: fc.constant(0) }), fc.constant({ is_admin: true, rate_limit: 0 }), hex(6).map((h) => ({ name: `fz-${h}`, max_concurrent_sessions: 100 })),
        fc.jsonValue({ maxDepth: 2 }), keypairChangeBad, policyFieldBad)).map(([[m, p], body]) => ({ m, p, body, seg: undefined as string | undefined })),
    badAkSeg.map((ak) => ({ m: 'GET', p: `/admin/keypairs/${ak}`, body: undefined as unknown, seg: ak })),
  )).map(([{ m, p, body, seg }]): Case => ({
    family: F, why: `user A: ${m} ${p}${body === undefined ? '' : ` ${json(body)?.slice(0, 60)}`}`, expect: seg === undefined ? [403] : paramExpect(seg, [403]), req: req(m, p, body, w.a),
  }));
  const validAdmin = pick<() => FuzzRequest>(
    req('GET', '/admin/keypairs'), req('GET', '/admin/jobs'), req('GET', '/admin/agents'), req('GET', '/admin/resource-policies'),
    req('POST', '/admin/keypairs', { email: 'fz-auth@example.com', is_admin: true, rate_limit: 0 }), req('POST', '/admin/resource-policies', { name: 'fz-auth', idle_timeout: 1 }),
    req('PATCH', `/admin/keypairs/${w.a.ak}`, { is_admin: true }), req('POST', `/admin/keypairs/${w.inactive.ak}/activate`), req('DELETE', `/admin/keypairs/${w.inactive.ak}`),
    req('POST', '/admin/jobs/retention-prune/run'), req('DELETE', `/admin/resource-policies/${USED_POLICY}`),
  );
  return fc.oneof(
    { arbitrary: keypairCreate, weight: 3 },
    { arbitrary: keypairRoutes, weight: 3 },
    { arbitrary: policyRoutes, weight: 3 },
    { arbitrary: jobRoutes, weight: 1 },
    { arbitrary: userRoutes, weight: 4 },
    { arbitrary: fc.tuple(pick<[string, string]>(['POST', '/admin/keypairs'], ['POST', '/admin/resource-policies'], ['PATCH', '/admin/resource-policies/default']), bodyBreak())
      .map(([[m, p], x]) => broken(F, `${m} ${p}`, req(m, p, { name: 'fz-x' }), x)), weight: 1 },
    { arbitrary: fc.tuple(validAdmin, authBreak(w)).map(([r, x]) => broken(F, `${r().method} ${r().path}`, r, x)), weight: 3 },
  );
}

/** GET /resource/usage?start=&end=. Whether a query is valid is decided as the route does (JS dates). */
function usageCases(w: World): fc.Arbitrary<Case> {
  const F = 'usage';
  const DAY = 86400_000;
  const iso = (ms: number) => new Date(ms).toISOString();
  const t0 = Date.UTC(2024, 0, 1);
  const good = fc.tuple(fc.integer({ min: -1000, max: 1000 }), fc.integer({ min: 1, max: 300 })).map(([d, span]) => ({ start: iso(t0 + d * DAY), end: iso(t0 + (d + span) * DAY) }));
  const weirdDate = fc.oneof(junk, latin1(45), pick('2024-01-01', '20240101', '2024-13-01', '2024-02-30T00:00:00Z', 'yesterday', 'now', '0', '-1', '1e10', 'Tuesday', '2024-01-01T25:00', '2024/01/01 12:00', 'Mon, 01 Jan 2024 00:00:00 GMT', '2024-01-01T00:00:00+99:00'));
  type Q = Record<string, string | string[]>;
  const edits = fc.oneof(
    pick('start', 'end').map((k) => ({ why: `no ${k}`, edit: (q: Q) => { delete q[k]; } })),
    fc.constant({ why: 'neither start nor end', edit: (q: Q) => { delete q.start; delete q.end; } }),
    fc.tuple(pick('start', 'end'), weirdDate).map(([k, v]) => ({ why: `${k}=${json(v)}`, edit: (q: Q) => { q[k] = v; } })),
    fc.integer({ min: 0, max: 1000 }).map((back) => ({ why: `end ${back} days before start`, edit: (q: Q) => { q.end = iso(Date.parse(q.start as string) - back * DAY); } })),
    fc.integer({ min: 367, max: 100_000 }).map((span) => ({ why: `a span of ${span} days`, edit: (q: Q) => { q.end = iso(Date.parse(q.start as string) + span * DAY); } })),
    fc.tuple(fc.string({ minLength: 1, maxLength: 10 }).filter((k) => !['start', 'end', 'owner_access_key'].includes(k)), fc.string({ maxLength: 10 })).map(([k, v]) => ({ why: `extra parameter ${json(k)}`, edit: (q: Q) => { q[k] = v; } })),
    pick('start', 'end').map((k) => ({ why: `${k} given twice`, edit: (q: Q) => { q[k] = [q[k] as string, q[k] as string]; } })),
    tooLong(21).map((v) => ({ why: 'owner_access_key too long', edit: (q: Q) => { q.owner_access_key = v; } })),
  );
  const qs = (q: Q) => Object.entries(q).flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `${enc(k)}=${enc(x)}`)).join('&');
  /** The route's own rules, so a query that happens to be valid is expected to pass. */
  const valid = (q: Q, keys: Keys) => {
    if (Object.keys(q).some((k) => !['start', 'end', 'owner_access_key'].includes(k))) return false;
    if (q.owner_access_key !== undefined && q.owner_access_key !== keys.ak) return false;
    const { start, end } = q;
    if (typeof start !== 'string' || typeof end !== 'string') return false;
    if ([start, end].some((s) => s.length < 8 || s.length > 40)) return false;
    const s = new Date(start).getTime();
    const e = new Date(end).getTime();
    return !Number.isNaN(s) && !Number.isNaN(e) && e > s && e - s <= 366 * DAY;
  };
  const bad = fc.tuple(good, edits, pick(w.admin, w.a)).map(([g, x, k]): Case => {
    const q: Q = { ...g };
    x.edit(q);
    const ok = valid(q, k);
    return { family: F, why: `${x.why}${ok ? ' (valid after all: expect 200)' : ''}`, expect: ok ? [200] : [400], req: () => ({ method: 'GET', path: `/resource/usage?${qs(q)}`, keys: k }) };
  });
  const validReq = fc.tuple(good, pick(w.admin, w.a)).map(([g, k]) => () => ({ method: 'GET', path: `/resource/usage?${qs(g)}`, keys: k }));
  return fc.oneof(
    { arbitrary: bad, weight: 6 },
    { arbitrary: fc.tuple(validReq, authBreak(w)).map(([r, x]) => broken(F, 'usage', r, x)), weight: 3 },
    { arbitrary: fc.tuple(validReq, ownerBreak(w, false)).map(([r, x]) => broken(F, 'usage', r, x)), weight: 2 },
  );
}

/** The signature layer itself, on requests of every family that would otherwise succeed. */
function authCases(w: World): fc.Arbitrary<Case> {
  const F = 'auth';
  const run = `/session/${w.running.name}`;
  const j = (method: string, path: string, body: unknown) => (): FuzzRequest => ({ method, path, keys: w.admin, contentType: 'application/json', body: json(body) });
  const g = (method: string, path: string) => (): FuzzRequest => ({ method, path, keys: w.admin });
  const routes = pick<() => FuzzRequest>(
    g('GET', '/session'), g('GET', run), g('GET', `/session/${w.running.id}`), g('DELETE', `/session/${w.pending.name}`), g('PATCH', run), g('GET', `${run}/logs`),
    j('POST', '/session', { name: 'fz-auth', image: 'python', enqueueOnly: true, config: { resources: SMALL, scalingGroup: VOID_GROUP } }),
    j('POST', run, { mode: 'query', code: 'x = 1' }), g('POST', `${run}/interrupt`), g('GET', `${run}/files`), j('POST', `${run}/download`, { files: ['.'] }),
    g('GET', '/admin/keypairs'), j('POST', '/admin/keypairs', { email: 'fz-auth@example.com' }), g('DELETE', `/admin/keypairs/${w.inactive.ak}`),
    j('POST', '/admin/resource-policies', { name: 'fz-auth' }), g('GET', '/admin/jobs'), g('POST', '/admin/jobs/retention-prune/run'),
    g('GET', '/resource/usage?start=2024-01-01&end=2024-02-01'), g('GET', '/manager/announcement'), g('GET', '/admin/agents'),
  );
  const jsonRoutes = pick(j('POST', '/session', { name: 'fz-auth', image: 'python', enqueueOnly: true }), j('POST', run, { mode: 'query', code: 'x = 1' }), j('POST', '/admin/keypairs', { email: 'fz-auth@example.com' }));
  // Bodies past the limit: the execute route takes up to 9 MiB, the others 1 MiB (its own cases are in the execute family).
  const oneMiBRoutes = pick(j('POST', '/session', { name: 'fz-auth', image: 'python', enqueueOnly: true }), j('POST', '/admin/keypairs', { email: 'fz-auth@example.com' }), j('PATCH', `/admin/keypairs/${w.a.ak}`, { is_admin: true }));
  /** Non-UTF-8 bytes in a JSON body, which alone is no refusal: the broken signature is. */
  const latin1Body = fc.uint8Array({ minLength: 1, maxLength: 16 }).map((u) => (r: FuzzRequest): FuzzRequest => ({
    ...r, body: Buffer.concat([Buffer.from(typeof r.body === 'string' ? r.body.slice(0, -1) : '{"a": 1'), Buffer.from(`, "tag": "`), Buffer.from(u.map((x) => 0x80 | x)), Buffer.from('"}')]),
  }));
  return fc.oneof(
    { arbitrary: fc.tuple(routes, authBreak(w)).map(([r, x]) => broken(F, `${r().method} ${r().path}`, r, x)), weight: 10 },
    { arbitrary: fc.tuple(jsonRoutes, authBreak(w), latin1Body).map(([r, x, nonUtf8]) => broken(F, `${r().method} ${r().path} (non-UTF-8 body)`, () => nonUtf8(r()), x)), weight: 2 },
    { arbitrary: fc.tuple(oneMiBRoutes, bodyBreak()).map(([r, x]) => broken(F, `${r().method} ${r().path}`, r, x)), weight: 2 },
    { arbitrary: fc.tuple(routes.filter((r) => !r().path.startsWith('/admin') && r().path !== '/manager/announcement'), ownerBreak(w, false)).map(([r, x]) => broken(F, `${r().method} ${r().path}`, r, x)), weight: 2 },
  );
}

// ---------------------------------------------------------------------------------------------
// The runner

interface Failure { c: Case; request: string; answer: FuzzAnswer | string; problem: string }

/**
 * A signed request carrying a NUL (a `%00` in its target, or `\u0000` in a JSON body) is refused
 * with 400 before any lookup: no field of the API takes one, so nothing about the objects it
 * names is revealed. Requests that fail authentication first keep their own answer.
 */
const carriesNul = (r: FuzzRequest) =>
  /%00/i.test(r.path) || (typeof r.body === 'string' && /^application\/json|^text\/plain/i.test(r.contentType ?? '') && /\\u0000/i.test(r.body) && jsonNul(r.body));

/** Whether JSON text holds a NUL in a string or key once parsed (`"\\u0000"`, an escaped backslash, does not); unparsable counts (it is a 400 anyway). */
function jsonNul(text: string): boolean {
  let found = false;
  try { JSON.parse(text, (k, v: unknown) => { if (k.includes('\0') || (typeof v === 'string' && v.includes('\0'))) found = true; return v; }); } catch { return true; }
  return found;
}

function check(c: Case, a: FuzzAnswer, r: FuzzRequest): string | undefined {
  const expect = carriesNul(r) && !c.expect.includes(401) ? [400] : c.expect;
  if (!expect.includes(a.status)) return `status ${a.status}, expected ${expect.join(' or ')}`;
  if (a.status < 400 || a.status >= 500) return a.status === 200 && expect.includes(200) ? undefined : `status ${a.status} is not a 4xx`;
  if (!/^application\/json/.test(a.contentType)) return `content type ${JSON.stringify(a.contentType)}`;
  const b = a.json as { type?: unknown; title?: unknown } | undefined;
  if (!b || typeof b !== 'object') return 'the body is not a JSON object';
  if (typeof b.type !== 'string' || !b.type.startsWith(PROBLEM_BASE)) return `type ${JSON.stringify(b.type)} is not a problem type`;
  if (typeof b.title !== 'string' || !b.title) return 'no title';
  if (/\bat .*\.(ts|js|mjs):\d+/.test(a.text)) return 'a stack trace in the body';
  return undefined;
}

async function runFamily(ctx: Ctx, family: string, arb: fc.Arbitrary<Case>): Promise<void> {
  const started = Date.now();
  const cases = fc.sample(arb, { numRuns: CASES, seed: SEED });
  assert.ok(cases.length >= CASES, `${cases.length} cases`);
  const before = await fingerprint(ctx.stores.db, TABLES);
  const rowsBefore = await rowsOf(ctx.stores.db, TABLES);
  const actors = ctx.m.supervisor.size;
  const failures: Failure[] = [];
  const statuses = new Map<number, number>();
  await inPool(cases, CONCURRENCY, async (c) => {
    let r: FuzzRequest | undefined;
    try {
      r = c.req();
      const a = await send(ctx.w.url, r);
      statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
      const problem = check(c, a, r);
      if (problem) failures.push({ c, request: describe(r), answer: a, problem });
    } catch (e) {
      failures.push({ c, request: r ? describe(r) : '(not built)', answer: `no answer: ${(e as Error).message}`, problem: 'the request failed' });
    }
  });
  const health = await fetch(`${ctx.w.url}/health`);
  assert.is(health.status, 200, 'the manager answers /health after the family');
  assert.ok(((await health.json()) as { ok: boolean }).ok, '/health says ok');
  // Let anything a case set off in the background (a write after the reply) land before comparing.
  await new Promise((r) => setTimeout(r, 1500));
  const after = await fingerprint(ctx.stores.db, TABLES);
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`  fuzz ${family}: ${cases.length} cases in ${seconds} s, statuses ${JSON.stringify(Object.fromEntries([...statuses].sort()))}, seed ${SEED}`);
  const report: string[] = [];
  if (failures.length) {
    // The shortest failing case of each kind of failure first: they are the minimal counterexamples.
    const byKind = new Map<string, Failure[]>();
    for (const f of failures.sort((x, y) => x.request.length - y.request.length)) {
      const kind = `${f.problem.replace(/\d{3}/g, 'NNN')}|${typeof f.answer === 'string' ? f.answer.slice(0, 30) : f.answer.text.replace(/"msg":.*|'.*'/, '').slice(0, 60)}`;
      byKind.set(kind, [...(byKind.get(kind) ?? []), f]);
    }
    report.push(`${failures.length} of ${cases.length} ${family} cases failed, in ${byKind.size} ways; the shortest of each:`);
    for (const [, fs] of [...byKind].slice(0, 8)) {
      const f = fs[0];
      report.push(`- ${f.problem} (${fs.length} cases; this one: ${f.c.why})\n  request: ${f.request}\n  answer: ${typeof f.answer === 'string' ? f.answer : `${f.answer.status} ${f.answer.contentType} ${f.answer.text.slice(0, 300)}`}`);
    }
  }
  if (JSON.stringify(after) !== JSON.stringify(before)) report.push(`tables changed:\n${rowDiff(rowsBefore, await rowsOf(ctx.stores.db, TABLES))}`);
  if (ctx.m.supervisor.size !== actors) report.push(`session actors: ${actors} before, ${ctx.m.supervisor.size} after`);
  if (report.length) assert.unreachable(`${family} (FUZZ_SEED=${SEED}):\n${report.join('\n')}`);
  assert.equal(after, before);
}

t('session create (POST /session): malformed bodies, names, resources, owners, content types', (ctx) => runFamily(ctx, 'create', createCases(ctx.w)));
t('session read, list, destroy and restart: missing, foreign and odd refs, bad queries', (ctx) => runFamily(ctx, 'read', readCases(ctx.w)));
t('execute and interrupt: malformed bodies, unknown runs, sessions not RUNNING or not ours', (ctx) => runFamily(ctx, 'execute', executeCases(ctx.w)));
t('files: upload, download and listing with escaping or missing paths, broken multipart', (ctx) => runFamily(ctx, 'files', fileCases(ctx.w)));
t('admin: keypairs, resource policies and jobs, malformed as an admin and forbidden to users', (ctx) => runFamily(ctx, 'admin', adminCases(ctx.w)));
t('resource usage: bad dates, spans, parameters and owners', (ctx) => runFamily(ctx, 'usage', usageCases(ctx.w)));
t('authentication: missing, malformed and forged signatures, dates, versions, content types, bodies', (ctx) => runFamily(ctx, 'auth', authCases(ctx.w)));

t.run();
