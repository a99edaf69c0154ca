// Cost of authentication and policy (issue 5): requests/s of a signed `GET /session/{id}` through
// the manager (signature check, keypair lookup, per-keypair rate limit in Redis, ownership), against
// the same route handler mounted by this bench on a bare fastify instance without the auth plugin
// (the handler's owner set by a hook), on the same database, in the same process and run.
// The same signed requests go to both; phases alternate so drift hits both alike.
//
//   node --import tsx bench/auth.ts [--seconds 2] [--rounds 10] [--concurrency 16]
import { Agent, request } from 'node:http';
import Fastify from 'fastify';
import { TypeBoxValidatorCompiler } from '@fastify/type-provider-typebox';
import { ExecutionService } from '../runtime/manager/execution.ts';
import type { App } from '../runtime/manager/http/app.ts';
import { sessionRoutes } from '../runtime/manager/http/sessions.ts';
import { Client } from '../runtime/sdk/index.ts';
import { API_VERSION, signRequest } from '../schema/signing.ts';
import { fmt, intArg, log, progress, startBenchCluster, writeResultsSection } from './lib.ts';

const BENCH = 'auth';
const SECONDS = intArg('seconds', 2);
const ROUNDS = intArg('rounds', 10);
const CONCURRENCY = intArg('concurrency', 16);
const TARGET = 0.9;

const c = await startBenchCluster('auth', { agentSlots: 'cpu=2,mem=4g' });
const { tag, m, stores, admin } = c;
const logger = c.log;
let bare: App | undefined;
try {
  // A user keypair whose rate limit is counted (in Redis) on every request but never reached.
  const user = await admin.admin.createKeypair({ email: `bench-${tag}@example.com`, rate_limit: 100_000_000 });
  const client = new Client({ endpoint: m.url, accessKey: user.access_key, secretKey: user.secret_key });
  const s = await client.sessions.create({ name: `bench-auth-${tag}`, image: 'python', resources: { cpu: 1, mem: '256m' } });
  if (s.status !== 'RUNNING') throw new Error(`session is ${s.status}`);
  const path = `/session/${s.sessionId}`;

  // The bare instance: the production route module, its validator, no auth, no rate limit.
  bare = Fastify({ logger: false }).withTypeProvider() as unknown as App;
  bare.setValidatorCompiler(TypeBoxValidatorCompiler);
  bare.addHook('preValidation', async (req) => { req.owner = user.access_key; });
  sessionRoutes(bare, m.sessions, new ExecutionService({ db: stores.db, agents: m.agents, supervisor: m.supervisor, log: logger }));
  await bare.listen({ host: '127.0.0.1', port: 0 });
  const bareUrl = `http://127.0.0.1:${(bare.server.address() as { port: number }).port}`;

  const keepAlive = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const get = (base: string) => new Promise<number>((resolve, reject) => {
    const url = new URL(path, base);
    const date = new Date().toISOString();
    const { authorization } = signRequest({ method: 'GET', pathWithQuery: path, date, host: url.host, version: API_VERSION, accessKey: user.access_key, secretKey: user.secret_key });
    const req = request(url, { agent: keepAlive, headers: { Date: date, 'X-BackendAI-Version': API_VERSION, Authorization: authorization } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
  /** Requests answered 200 in `SECONDS` with CONCURRENCY in flight. */
  const phase = async (base: string): Promise<number> => {
    const until = performance.now() + SECONDS * 1000;
    let ok = 0;
    const worker = async () => {
      while (performance.now() < until) {
        const status = await get(base);
        if (status !== 200) throw new Error(`${base}${path} answered ${status}`);
        ok++;
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    return ok / ((performance.now() - t0) / 1000);
  };

  for (const base of [m.url, bareUrl]) await phase(base); // warm-up, not counted
  const full: number[] = [];
  const baseline: number[] = [];
  const p = progress(BENCH, 'alternating phases', ROUNDS * 2);
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate which goes first, so neither always runs on a warmer process.
    const order = r % 2 ? [bareUrl, m.url] : [m.url, bareUrl];
    for (const base of order) { (base === m.url ? full : baseline).push(await phase(base)); p.tick(); }
  }
  p.done();
  const median = (v: number[]) => { const s = [...v].sort((x, y) => x - y); const h = Math.floor(s.length / 2); return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2; };
  const rFull = median(full);
  const rBare = median(baseline);
  // Each round's two phases ran back to back: their ratio cancels the slower drifts of the
  // machine's other load; the figure is the median of those paired ratios.
  const pairs = full.map((f, i) => f / baseline[i]);
  const ratio = median(pairs);
  log(BENCH, `manager ${fmt(rFull)} req/s, bare ${fmt(rBare)} req/s; median paired ratio ${ratio.toFixed(3)}×`);
  const rateKey = await stores.liveness.hitWindow(`flotilla:ratelimit:${user.access_key}`, 15 * 60_000);
  writeResultsSection({
    title: 'Authentication and policy cost (issue 5)',
    table: {
      headers: ['figure', 'value'],
      rows: [
        ['signed GET /session/{id} through the manager (auth, rate limit, ownership), median of rounds', `${fmt(rFull)} req/s (rounds: ${full.map((x) => fmt(x)).join(', ')})`],
        ['the same handler on a bare fastify without auth, median of rounds', `${fmt(rBare)} req/s (rounds: ${baseline.map((x) => fmt(x)).join(', ')})`],
        ['paired ratio of each round (manager / bare)', pairs.map((x) => x.toFixed(3)).join(', ')],
        [`median of the paired ratios (target ≥ ${TARGET})`, `${ratio.toFixed(2)}×`],
      ],
    },
    ratio: `manager / bare handler, median of paired rounds = **${ratio.toFixed(2)}×** (target ≥ ${TARGET})`,
    notes: [
      `One process: an in-process manager and agent on the real PostgreSQL, Redis and etcd, one RUNNING python session; ${CONCURRENCY} requests in flight over keep-alive connections, ${ROUNDS} rounds of ${SECONDS} s per side, the order alternating between rounds, after one warm-up phase each.`,
      'Both sides run the production route module (runtime/manager/http/sessions.ts, SessionService.find + info: two queries) with the TypeBox validator; the bare side has no signature check, keypair lookup or rate limit, and its owner is set by a hook. Every request is signed (a fresh Date and HMAC per request) for both, so client work is the same.',
      `The keypair's rate limit is counted on every manager request (a rolling-window update in Redis: ${rateKey} hits recorded by the end) but set high enough never to refuse.`,
    ],
  });
  if (ratio < TARGET) process.exitCode = 1;
} finally {
  await bare?.close();
  await c.close();
}
