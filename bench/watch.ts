// Watch fan-out (issue 8): one session state change delivered to N connected `/watch` clients
// (signed handshakes, each subscribed to its sessions), latency from the moment the transaction
// committed (WatchGateway.publish) to each client's receipt; against a bare socket.io server in
// the same process broadcasting the same payload to the same number of clients.
//
//   node --import tsx bench/watch.ts [--clients 1000] [--changes 20]
import { createServer } from 'node:http';
import { Server as SocketServer } from 'socket.io';
import { io as connect, type Socket } from 'socket.io-client';
import type { WatchEvent } from '../runtime/manager/watch.ts';
import { Client } from '../runtime/sdk/index.ts';
import { API_VERSION, signRequest } from '../schema/signing.ts';
import { fmt, intArg, log, progress, startBenchCluster, summarize, writeResultsSection } from './lib.ts';

const BENCH = 'watch';
const CLIENTS = intArg('clients', 1000);
const CHANGES = intArg('changes', 20);
const TARGET_P99_MS = 100;

// The create path checks that some agent has the image: one agent (no container ever starts).
const c = await startBenchCluster('watch', { agentSlots: 'cpu=1,mem=1g' });
const { tag, m, stores, admin } = c;
const sockets: Socket[] = [];
const bare = createServer();
const bareIo = new SocketServer(bare, { serveClient: false });
try {
  const user = await admin.admin.createKeypair({ email: `watch-${tag}@example.com`, rate_limit: 0 });
  await admin.admin.updateResourcePolicy('default', { max_concurrent_sessions: 1000 });
  const client = new Client({ endpoint: m.url, accessKey: user.access_key, secretKey: user.secret_key });
  // Sessions in a resource group without agents: each destroy is one state change (CANCELLED), no containers.
  const group = `bench-${tag}`;
  await stores.db.query(`INSERT INTO resource_groups (name) VALUES ($1)`, [group]);

  // ---- flotilla: N signed /watch clients
  const received = new Map<string, number[]>(); // sessionId → receipt times
  const url = new URL(m.url);
  const p1 = progress(BENCH, `connecting ${CLIENTS} /watch clients`, CLIENTS);
  for (let i = 0; i < CLIENTS; i++) {
    const date = new Date().toISOString();
    const { authorization } = signRequest({ method: 'GET', pathWithQuery: '/socket.io', date, host: url.host, version: API_VERSION, accessKey: user.access_key, secretKey: user.secret_key });
    const s = connect(`${m.url}/watch`, { transports: ['websocket'], reconnection: false, forceNew: true, auth: { Date: date, 'X-BackendAI-Version': API_VERSION, Authorization: authorization } });
    s.on('session_cancelled', (e: WatchEvent) => { const t = performance.now(); let l = received.get(e.sessionId); if (!l) received.set(e.sessionId, (l = [])); l.push(t); });
    await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('connect_error', reject); });
    const ack = await s.timeout(10_000).emitWithAck('subscribe', {}) as { ok: boolean };
    if (!ack.ok) throw new Error('subscribe refused');
    sockets.push(s);
    p1.tick();
  }
  p1.done();
  const watch = m.watch;
  const publish = watch.publish.bind(watch);
  const committedAt = new Map<string, number>();
  watch.publish = (events) => {
    const t = performance.now();
    for (const e of events) if (e.name === 'session_cancelled') committedAt.set(e.sessionId, t);
    publish(events);
  };
  const flotilla: number[] = [];
  const p2 = progress(BENCH, 'state changes to /watch clients', CHANGES);
  for (let i = 0; i < CHANGES + 2; i++) {
    const s = await client.sessions.create({ name: `watch-${i}`, image: 'python', resourceGroup: group, enqueueOnly: true });
    await client.sessions.destroy(s.sessionId);
    const until = Date.now() + 30_000;
    while ((received.get(s.sessionId)?.length ?? 0) < CLIENTS && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    const got = received.get(s.sessionId) ?? [];
    if (got.length !== CLIENTS) throw new Error(`only ${got.length} of ${CLIENTS} clients got the change`);
    if (i >= 2) { for (const t of got) flotilla.push(t - committedAt.get(s.sessionId)!); p2.tick(); } // 2 warm-ups
  }
  p2.done();
  for (const s of sockets.splice(0)) s.disconnect();

  // ---- baseline: a bare socket.io broadcast of the same payload to as many clients
  await new Promise<void>((r) => bare.listen(0, '127.0.0.1', r));
  const bareUrl = `http://127.0.0.1:${(bare.address() as { port: number }).port}`;
  const bareGot = new Map<number, number[]>();
  const p3 = progress(BENCH, `connecting ${CLIENTS} bare clients`, CLIENTS);
  for (let i = 0; i < CLIENTS; i++) {
    const s = connect(bareUrl, { transports: ['websocket'], reconnection: false, forceNew: true });
    s.on('session_cancelled', (e: WatchEvent) => { const t = performance.now(); let l = bareGot.get(e.seq); if (!l) bareGot.set(e.seq, (l = [])); l.push(t); });
    await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('connect_error', reject); });
    sockets.push(s);
    p3.tick();
  }
  p3.done();
  const baseline: number[] = [];
  const sample: WatchEvent = { name: 'session_cancelled', seq: 0, sessionId: '5e55105e-0000-4000-8000-000000000001', sessionName: 'watch-0', kernelId: null, ownerAccessKey: user.access_key, status: 'CANCELLED', reason: 'user-requested', at: new Date().toISOString() };
  for (let i = 0; i < CHANGES + 2; i++) {
    const t0 = performance.now();
    bareIo.emit('session_cancelled', { ...sample, seq: i + 1 });
    const until = Date.now() + 30_000;
    while ((bareGot.get(i + 1)?.length ?? 0) < CLIENTS && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    if (i >= 2) for (const t of bareGot.get(i + 1) ?? []) baseline.push(t - t0);
    await new Promise((r) => setTimeout(r, 20));
  }
  for (const s of sockets.splice(0)) s.disconnect();

  const f = summarize(flotilla);
  const bl = summarize(baseline);
  log(BENCH, `flotilla p50 ${fmt(f.p50, 1)} ms p99 ${fmt(f.p99, 1)} ms; bare broadcast p50 ${fmt(bl.p50, 1)} ms p99 ${fmt(bl.p99, 1)} ms`);
  writeResultsSection({
    title: 'Watch fan-out (issue 8)',
    table: {
      headers: ['figure', 'value'],
      rows: [
        [`one session state change to ${CLIENTS} /watch clients, commit → receipt, p50 / p99 / max (n ${f.n})`, `${fmt(f.p50, 1)} ms / ${fmt(f.p99, 1)} ms / ${fmt(f.max, 1)} ms`],
        [`bare socket.io broadcast of the same payload to ${CLIENTS} clients, emit → receipt, p50 / p99 / max (n ${bl.n})`, `${fmt(bl.p50, 1)} ms / ${fmt(bl.p99, 1)} ms / ${fmt(bl.max, 1)} ms`],
        ['p99 ratio flotilla / bare', `${(f.p99 / bl.p99).toFixed(2)}×`],
      ],
    },
    ratio: `p99 **${fmt(f.p99, 1)} ms** (target ≤ ${TARGET_P99_MS} ms) against ${fmt(bl.p99, 1)} ms for a bare broadcast (${(f.p99 / bl.p99).toFixed(2)}×)`,
    notes: [
      `One process: the manager (real PostgreSQL, Redis with the socket.io Redis adapter, etcd), ${CLIENTS} socket.io-client connections (websocket) each with its own signed handshake and a subscribe to the keypair's sessions; the clients share the process's event loop with the manager, as the bare baseline's do with its server.`,
      `A state change: a session in a resource group without agents is created and destroyed (PENDING → CANCELLED); timed from WatchGateway.publish (right after the transaction committed) to each client's session_cancelled handler; ${CHANGES} changes after 2 warm-ups, one at a time.`,
      'The bare baseline: a socket.io server on its own port with the same number of clients; `io.emit` of the same payload (one encode, the adapter writes it to every socket), timed from just before the emit.',
      'flotilla sends to each subscriber apart (each subscription has its own replay/hold state and filters), so it encodes the packet once per client where the bare broadcast encodes once.',
    ],
  });
  if (f.p99 > TARGET_P99_MS) process.exitCode = 1;
} finally {
  for (const s of sockets) s.disconnect();
  bareIo.close();
  await c.close();
}
