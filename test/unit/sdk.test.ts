// The SDK's wire behaviour against a tiny stand-in server that checks every request's signature
// the way API.md prescribes (not the real manager).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import * as assert from 'uvu/assert';
import { suite } from '../helpers/suite.ts';
import { PROBLEM_BASE } from '../../schema/errors.ts';
import { API_VERSION, parseAuthorization, parseRequestDate, verifySignature } from '../../schema/signing.ts';
import {
  AuthorizationFailed, Client, FlotillaError, InvalidAPIParameters, ServiceUnavailable, SessionNotFound,
} from '../../runtime/sdk/index.ts';

const ACCESS_KEY = 'AKTESTTESTTESTTEST01';
const SECRET_KEY = 'a'.repeat(20) + 'B'.repeat(20);

interface Seen { method: string; url: string; headers: IncomingMessage['headers']; body: string; verified: boolean }
type Reply = (req: Seen, res: ServerResponse) => void;

const json = (res: ServerResponse, status: number, body: unknown): void => {
  res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
};
const problem = (res: ServerResponse, status: number, code: string, title: string, msg?: string): void =>
  json(res, status, { type: PROBLEM_BASE + code, title, ...(msg ? { msg } : {}) });

/** Recompute the signature from the request exactly as received. */
function verify(req: IncomingMessage): boolean {
  const auth = parseAuthorization(req.headers.authorization);
  if (!auth || auth.accessKey !== ACCESS_KEY) return false;
  return verifySignature({
    method: req.method!, pathWithQuery: req.url!, date: String(req.headers['x-backendai-date'] ?? req.headers.date),
    host: req.headers.host!, contentType: req.headers['content-type'], version: String(req.headers['x-backendai-version']),
    secretKey: SECRET_KEY, signature: auth.signature,
  });
}

async function listen(server: Server, host: string, port = 0): Promise<number> {
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(port, host, resolve); });
  return (server.address() as AddressInfo).port;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections(); // fetch keeps connections alive
  await new Promise((r) => server.close(r));
}

/** A port nothing listens on. */
async function freePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

interface Ctx { server: Server; port: number; seen: Seen[]; reply: Reply; ipv6: boolean }
const test = suite<Ctx>('sdk', { timeoutMs: 10_000 });

// The stand-in rejects unsigned or wrongly signed requests as the manager does, so every test
// that gets a 2xx also proves its requests verified.
function handler(ctx: Ctx) {
  return (req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => {
      const seen: Seen = { method: req.method!, url: req.url!, headers: req.headers, body, verified: verify(req) };
      ctx.seen.push(seen);
      if (!seen.verified) return problem(res, 401, 'auth-failed', 'Credential/signature mismatch.');
      ctx.reply(seen, res);
    });
  };
}

test.before(async (ctx) => {
  ctx.seen = [];
  ctx.server = createServer(handler(ctx));
  try { // dual stack when the host has IPv6, so the same server answers [::1] too
    ctx.port = await listen(ctx.server, '::');
    ctx.ipv6 = true;
  } catch {
    ctx.port = await listen(ctx.server, '127.0.0.1');
    ctx.ipv6 = false;
  }
});
test.after(async (ctx) => { await close(ctx.server); });

const clientFor = (endpoint: string | string[], extra: { secretKey?: string; timeoutMs?: number } = {}) =>
  new Client({ endpoints: ([] as string[]).concat(endpoint), accessKey: ACCESS_KEY, secretKey: extra.secretKey ?? SECRET_KEY, timeoutMs: extra.timeoutMs });

test('requests are signed: headers, and the signature verifies on the receiving side', async (ctx) => {
  ctx.seen = [];
  ctx.reply = (_req, res) => json(res, 200, { items: [], total: 0 });
  const before = Date.now();
  assert.equal(await clientFor(`http://127.0.0.1:${ctx.port}`).sessions.list(), { items: [], total: 0 });
  const [r] = ctx.seen;
  assert.ok(r.verified);
  assert.is(r.method, 'GET');
  assert.is(r.url, '/session');
  assert.is(r.headers['x-backendai-version'], API_VERSION);
  assert.is(r.headers['content-type'], undefined, 'no body, no content type (signed as application/octet-stream)');
  assert.match(String(r.headers.date), /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  const sent = parseRequestDate(String(r.headers.date))!.getTime();
  assert.ok(sent >= before - 1000 && sent <= Date.now() + 1000, 'Date is now');
  assert.is(parseAuthorization(r.headers.authorization)?.accessKey, ACCESS_KEY);
});

test('a wrong secret is rejected by the server and surfaces as AuthorizationFailed', async (ctx) => {
  ctx.seen = [];
  ctx.reply = (_req, res) => json(res, 200, {});
  const err = await clientFor(`http://127.0.0.1:${ctx.port}`, { secretKey: SECRET_KEY.slice(0, -1) + 'C' }).sessions.get('abcd').catch((e) => e);
  assert.not.ok(ctx.seen[0].verified);
  assert.instance(err, AuthorizationFailed);
  assert.is(err.code, 'auth-failed');
  assert.is(err.status, 401);
});

test('Host: signed as fetch sends it, for names, IPv4, IPv6 and a path prefix', async (ctx) => {
  ctx.reply = (_req, res) => json(res, 200, { result: { logs: 'hello\n' } });
  const endpoints = [`http://127.0.0.1:${ctx.port}`, `http://localhost:${ctx.port}/`, `http://127.0.0.1:${ctx.port}/api/`];
  if (ctx.ipv6) endpoints.push(`http://[::1]:${ctx.port}`);
  for (const e of endpoints) {
    ctx.seen = [];
    assert.is(await clientFor(e).sessions.logs('my-sess'), 'hello\n', e);
    const [r] = ctx.seen;
    assert.ok(r.verified, e);
    assert.is(r.headers.host, new URL(e).host, e);
    assert.is(r.url, e.includes('/api') ? '/api/session/my-sess/logs' : '/session/my-sess/logs', e);
  }
});

test('a problem body becomes its typed error class, with code, status and message', async (ctx) => {
  const client = clientFor(`http://127.0.0.1:${ctx.port}`);
  ctx.reply = (_req, res) => problem(res, 404, 'session-not-found', 'No such session.', 'session "nope" not found');
  let err = await client.sessions.get('nope').catch((e) => e);
  assert.instance(err, SessionNotFound);
  assert.instance(err, FlotillaError);
  assert.is(err.code, 'session-not-found');
  assert.is(err.status, 404);
  assert.is(err.message, 'session "nope" not found');

  ctx.reply = (_req, res) => problem(res, 400, 'invalid-api-params', 'Missing or invalid API parameters.');
  err = await client.sessions.create({ image: 'python' }).catch((e) => e);
  assert.instance(err, InvalidAPIParameters);
  assert.is(err.code, 'invalid-api-params');

  ctx.reply = (_req, res) => problem(res, 418, 'teapot', 'I am a teapot.', 'short and stout');
  err = await client.sessions.get('x').catch((e) => e);
  assert.instance(err, FlotillaError);
  assert.is(err.code, 'teapot');
  assert.is(err.status, 418);
  assert.is(err.title, 'I am a teapot.');

  ctx.reply = (_req, res) => res.writeHead(502, { 'Content-Type': 'text/html' }).end('<html>bad gateway</html>');
  err = await client.sessions.get('x').catch((e) => e);
  assert.instance(err, FlotillaError);
  assert.is(err.status, 502);
  assert.is(err.title, 'HTTP 502 Bad Gateway');
});

test('failover: a refused endpoint is skipped, the reachable one is remembered', async (ctx) => {
  ctx.seen = [];
  ctx.reply = (_req, res) => json(res, 200, { items: [], total: 0 });
  const deadPort = await freePort();
  const dead = `http://127.0.0.1:${deadPort}`;
  const live = `http://127.0.0.1:${ctx.port}`;
  const client = clientFor([dead, live]);
  await client.sessions.list();
  assert.is(client.endpoint, live);
  assert.is(ctx.seen.length, 1);
  assert.ok(ctx.seen[0].verified, 'signed for the endpoint that answered');

  // The first endpoint comes back; the client stays with the one that answered.
  let revived = 0;
  const other = createServer((_req, res) => { revived++; json(res, 200, {}); });
  await listen(other, '127.0.0.1', deadPort);
  try {
    await client.sessions.list();
    assert.is(revived, 0);
    assert.is(ctx.seen.length, 2);
  } finally { await close(other); }

  const err = await clientFor([dead, `http://127.0.0.1:${await freePort()}`]).sessions.list().catch((e) => e);
  assert.instance(err, ServiceUnavailable);
  assert.match(err.message, /ECONNREFUSED/);
});

test('no answer within timeoutMs is ServiceUnavailable, and is not retried elsewhere', async (ctx) => {
  ctx.seen = [];
  ctx.reply = () => { /* never answers */ };
  const err = await clientFor([`http://127.0.0.1:${ctx.port}`, `http://localhost:${ctx.port}`], { timeoutMs: 200 }).sessions.list().catch((e) => e);
  assert.instance(err, ServiceUnavailable);
  assert.match(err.message, /within 200 ms/);
  assert.is(ctx.seen.length, 1);
});

test('list: query encoding', async (ctx) => {
  ctx.seen = [];
  ctx.reply = (_req, res) => json(res, 200, { items: [], total: 0 });
  const client = clientFor(`http://127.0.0.1:${ctx.port}`);
  await client.sessions.list({ status: ['RUNNING', 'PENDING'], limit: 10, offset: 20 });
  await client.sessions.list({ status: 'TERMINATED' });
  assert.equal(ctx.seen.map((r) => [r.verified, r.url]), [
    [true, '/session?status=RUNNING%2CPENDING&limit=10&offset=20'],
    [true, '/session?status=TERMINATED'],
  ]);
});

test('create: camelCase body with config, generated name, JSON content type', async (ctx) => {
  ctx.seen = [];
  ctx.reply = (req, res) => {
    const b = JSON.parse(req.body);
    json(res, 201, { sessionId: '4a1c6b8e-0000-4000-8000-000000000000', sessionName: b.name, status: 'RUNNING', servicePorts: [], created: true });
  };
  const client = clientFor(`http://127.0.0.1:${ctx.port}`);
  const r = await client.sessions.create({
    name: 'my-sess', image: 'python', type: 'batch', clusterSize: 2, clusterMode: 'multi-node',
    resources: { cpu: 1.5, mem: '1g', 'cuda.device': 1 }, mounts: ['data'], environ: { A: '1' }, resourceGroup: 'gpu',
    enqueueOnly: true, maxWaitSeconds: 30, reuseIfExists: true, startupCommand: 'echo hi', tag: 't1',
  });
  assert.equal(r, { sessionId: '4a1c6b8e-0000-4000-8000-000000000000', sessionName: 'my-sess', status: 'RUNNING', servicePorts: [], created: true });
  const [full] = ctx.seen;
  assert.ok(full.verified);
  assert.is(full.method, 'POST');
  assert.is(full.url, '/session');
  assert.is(full.headers['content-type'], 'application/json');
  assert.equal(JSON.parse(full.body), {
    name: 'my-sess', image: 'python', type: 'batch', clusterSize: 2, clusterMode: 'multi-node',
    config: { resources: { cpu: 1.5, mem: '1g', 'cuda.device': 1 }, mounts: ['data'], environ: { A: '1' }, scalingGroup: 'gpu' },
    enqueueOnly: true, maxWaitSeconds: 30, reuseIfExists: true, startupCommand: 'echo hi', tag: 't1',
  });

  const minimal = await client.sessions.create({ image: 'shell' });
  assert.match(minimal.sessionName, /^sess-[0-9a-f]{8}$/);
  assert.equal(JSON.parse(ctx.seen[1].body), { name: minimal.sessionName, image: 'shell', config: {} });
});

test('get, destroy, restart: paths, methods, encoding', async (ctx) => {
  ctx.seen = [];
  ctx.reply = (req, res) => {
    if (req.method === 'PATCH') return void res.writeHead(204).end();
    if (req.method === 'DELETE') return json(res, 200, { stats: { cpu_used: 1 } });
    json(res, 200, { sessionId: 'id', sessionName: 'a b', kernels: [] });
  };
  const client = clientFor(`http://127.0.0.1:${ctx.port}`);
  assert.is((await client.sessions.get('a b')).sessionName, 'a b');
  assert.equal(await client.sessions.destroy('s1', { forced: true }), { stats: { cpu_used: 1 } });
  await client.sessions.destroy('s1');
  assert.is(await client.sessions.restart('s1'), undefined);
  assert.equal(ctx.seen.map((r) => [r.verified, r.method, r.url]), [
    [true, 'GET', '/session/a%20b'],
    [true, 'DELETE', '/session/s1?forced=true'],
    [true, 'DELETE', '/session/s1'],
    [true, 'PATCH', '/session/s1'],
  ]);
});

test.run();
