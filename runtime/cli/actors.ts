// `flotilla actors`: the live actor graph of a manager as a tree in the terminal — the manager,
// its agents, its sessions and their kernels, with states, ages and placement. `--watch` follows
// socket.io /inspect and redraws on every change until Ctrl-C. Admin keypairs only.
import type { Command } from 'commander';
import { loadProcessSettings } from '../../config/settings.ts';
import { ConfigError } from '../../schema/errors.ts';
import { filterActors, inspectActors, type ActorFilter, type ActorGraphSnapshot, type ActorNode } from '../sdk/inspect.ts';
import { apiAction, clientFromSettings } from './session.ts';

/** `65_000` → `1m5s`; days, hours, minutes, seconds, the two largest units. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const units: Array<[string, number]> = [['d', Math.floor(s / 86400)], ['h', Math.floor(s / 3600) % 24], ['m', Math.floor(s / 60) % 60], ['s', s % 60]];
  const first = units.findIndex(([, v]) => v > 0);
  if (first < 0) return '0s';
  return units.slice(first, first + 2).filter(([, v], i) => i === 0 || v > 0).map(([u, v]) => `${v}${u}`).join('');
}

const COLORS: Record<string, number> = {
  RUNNING: 32, ALIVE: 32, RESTARTING: 33, PENDING: 33, SCHEDULED: 33, PREPARING: 33, PULLING: 33, PREPARED: 33, CREATING: 33,
  TERMINATING: 35, TERMINATED: 90, CANCELLED: 90, ERROR: 31, LOST: 31,
};
const paint = (on: boolean, code: number | undefined, s: string) => (on && code ? `\x1b[${code}m${s}\x1b[0m` : s);

export interface RenderOptions {
  /** The time ages are measured to (epoch ms); default now. */
  now?: number;
  /** ANSI colours by status; default false. */
  color?: boolean;
}

const shortId = (id: string) => (/^[0-9a-f]{8}-[0-9a-f-]{27}$/i.test(id) ? id.slice(0, 8) : id);
const str = (v: unknown) => (typeof v === 'string' && v ? v : undefined);

/**
 * The graph as a tree:
 * ```
 * manager:host:42   RUNNING  up 5m
 * ├─ agents
 * │  └─ i-agent-1   ALIVE    3m
 * └─ sessions
 *    └─ graph-1 3f2a1b4c   RUNNING  12s
 *       └─ main1          RUNNING  on i-agent-1  11s
 * ```
 * Kernels whose session is not in `nodes` (a filter by agent) hang under a placeholder line for
 * their session. Pure: the same input gives the same text.
 */
export function renderActorTree(graph: ActorGraphSnapshot, opts: RenderOptions = {}): string {
  const now = opts.now ?? Date.now();
  const color = opts.color ?? false;
  const age = (n: ActorNode) => (n.endedAt ? `ended ${formatAge(now - Date.parse(n.endedAt))} ago` : formatAge(now - Date.parse(n.startedAt)));
  type Row = { prefix: string; label: string; status?: string; detail?: string; age?: string };
  const rows: Row[] = [];
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const manager = byId.get(graph.managerId);
  rows.push({ prefix: '', label: graph.managerId, status: manager?.status, age: manager ? `up ${age(manager)}` : undefined });

  const byStart = (a: ActorNode, b: ActorNode) => a.startedAt.localeCompare(b.startedAt) || a.id.localeCompare(b.id);
  const agents = graph.nodes.filter((n) => n.kind === 'agent').sort((a, b) => a.id.localeCompare(b.id));
  const sessions = graph.nodes.filter((n) => n.kind === 'session').sort(byStart);
  const kernels = graph.nodes.filter((n) => n.kind === 'kernel');
  const kernelsOf = new Map<string, ActorNode[]>();
  for (const k of kernels) {
    const p = k.parent ?? '';
    kernelsOf.set(p, [...(kernelsOf.get(p) ?? []), k]);
  }
  for (const list of kernelsOf.values()) {
    list.sort((a, b) => (a.summary.role === 'main' ? 0 : 1) - (b.summary.role === 'main' ? 0 : 1)
      || String(a.summary.hostname ?? a.id).localeCompare(String(b.summary.hostname ?? b.id)));
  }
  // Sessions in the graph, then placeholders for kernels whose session is not.
  type SessionEntry = { id: string; node?: ActorNode };
  const sessionEntries: SessionEntry[] = sessions.map((s) => ({ id: s.id, node: s }));
  for (const p of [...kernelsOf.keys()].sort()) if (!byId.has(p)) sessionEntries.push({ id: p });

  const groups: Array<{ title: string; add: (indent: string) => void; size: number }> = [];
  if (agents.length) {
    groups.push({
      title: 'agents', size: agents.length,
      add: (indent) => agents.forEach((a, i) => {
        const last = i === agents.length - 1;
        rows.push({ prefix: indent + (last ? '└─ ' : '├─ '), label: a.id, status: a.status, age: age(a) });
      }),
    });
  }
  if (sessionEntries.length) {
    groups.push({
      title: 'sessions', size: sessionEntries.length,
      add: (indent) => sessionEntries.forEach((s, i) => {
        const last = i === sessionEntries.length - 1;
        const n = s.node;
        const name = n && str(n.summary.name);
        rows.push({
          prefix: indent + (last ? '└─ ' : '├─ '),
          label: n ? (name ? `${name} ${shortId(n.id)}` : n.id) : `(session ${shortId(s.id)})`,
          status: n?.status, age: n ? age(n) : undefined,
        });
        const ks = kernelsOf.get(s.id) ?? [];
        const inner = indent + (last ? '   ' : '│  ');
        ks.forEach((k, j) => {
          const host = str(k.summary.hostname);
          rows.push({
            prefix: inner + (j === ks.length - 1 ? '└─ ' : '├─ '),
            label: host ? `${host} ${shortId(k.id)}` : k.id,
            status: k.status, detail: k.agentId ? `on ${k.agentId}` : 'unplaced', age: age(k),
          });
        });
      }),
    });
  }
  if (!groups.length) rows.push({ prefix: '└─ ', label: '(no agents or sessions)' });
  groups.forEach((g, i) => {
    const last = i === groups.length - 1;
    rows.push({ prefix: last ? '└─ ' : '├─ ', label: `${g.title} (${g.size})` });
    g.add(last ? '   ' : '│  ');
  });

  const w1 = Math.max(...rows.map((r) => r.prefix.length + r.label.length));
  const w2 = Math.max(0, ...rows.map((r) => (r.status ?? '').length));
  const w3 = Math.max(0, ...rows.map((r) => (r.detail ?? '').length));
  return rows.map((r) => {
    if (r.status === undefined && r.age === undefined) return r.prefix + r.label;
    const status = paint(color, COLORS[r.status ?? ''], (r.status ?? '-').padEnd(w2));
    const cols = [(r.prefix + r.label).padEnd(w1), status, ...(w3 ? [(r.detail ?? '').padEnd(w3)] : []), r.age ?? ''];
    return cols.join('  ').trimEnd();
  }).join('\n');
}

/** The keypair of the process settings (the same names clientFromSettings reads). */
function keysFromSettings(env: NodeJS.ProcessEnv = process.env): { accessKey: string; secretKey: string } {
  const merged = { ...env };
  if (!merged.FLOTILLA_ACCESS_KEY && merged.BACKEND_ACCESS_KEY) merged.FLOTILLA_ACCESS_KEY = merged.BACKEND_ACCESS_KEY;
  if (!merged.FLOTILLA_SECRET_KEY && merged.BACKEND_SECRET_KEY) merged.FLOTILLA_SECRET_KEY = merged.BACKEND_SECRET_KEY;
  if (!merged.FLOTILLA_MANAGER_URLS && merged.BACKEND_ENDPOINT) merged.FLOTILLA_MANAGER_URLS = merged.BACKEND_ENDPOINT;
  const s = loadProcessSettings(merged);
  if (!s.accessKey || !s.secretKey) throw new ConfigError('FLOTILLA_ACCESS_KEY', 'no keypair to sign requests with');
  return { accessKey: s.accessKey, secretKey: s.secretKey };
}

type ActorsOptions = { json?: boolean; watch?: boolean; session?: string; agent?: string; state?: string };

export function registerActorCommands(program: Command): void {
  program.command('actors').description('the live actor graph of a manager as a tree: agents, sessions and their kernels (an admin keypair)')
    .option('--session <ref>', 'only this session (its id, the first 8 or more characters of it, or its name) and its kernels')
    .option('--agent <id>', 'only this agent and the kernels placed on it')
    .option('--state <state>', 'only actors in this status or state (e.g. RUNNING)')
    .option('--json', 'print the graph as JSON ({managerId, nodes}); with --watch, one JSON message per line')
    .option('--watch', 'follow the graph live (socket.io /inspect) and redraw on each change until Ctrl-C')
    .action(apiAction(async (o: ActorsOptions) => {
      const filter: ActorFilter = { session: o.session, agent: o.agent, state: o.state };
      const client = clientFromSettings();
      // Also the check that the manager answers and the keypair is an admin's (typed errors).
      const first = await client.request<ActorGraphSnapshot>('GET', '/admin/actors', { query: { ...filter } });
      // A name or short id, resolved once: live deltas carry kernels without their session node.
      const named = o.session ? first.nodes.find((n) => n.kind === 'session') : undefined;
      if (named) filter.session = named.id;
      if (!o.watch) {
        console.log(o.json ? JSON.stringify(first, null, 2) : renderActorTree(first, { color: !!process.stdout.isTTY }));
        return;
      }
      await watchActors(client.endpoint, keysFromSettings(), filter, !!o.json);
    }));
}

/** Follow /inspect of the manager that answered, redrawing (or printing JSON lines) until Ctrl-C. */
async function watchActors(endpoint: string, keys: { accessKey: string; secretKey: string }, filter: ActorFilter, json: boolean): Promise<void> {
  const g = inspectActors({ endpoint, ...keys });
  const tty = !!process.stdout.isTTY;
  const draw = () => {
    const tree = renderActorTree({ managerId: g.managerId, nodes: filterActors(g.nodes.values(), filter) }, { color: tty });
    const head = `flotilla actors · ${endpoint} · ${new Date().toISOString().slice(11, 19)} UTC · Ctrl-C to stop`;
    process.stdout.write(`${tty ? '\x1b[H\x1b[2J' : '\n'}${head}\n\n${tree}\n`);
  };
  g.onChange((msg) => {
    if (!json) { draw(); return; }
    if (msg.kind === 'graph') console.log(JSON.stringify({ graph: { managerId: msg.graph.managerId, nodes: filterActors(msg.graph.nodes, filter) } }));
    else {
      const upserts = filterActors(msg.delta.upserts, filter);
      if (upserts.length || msg.delta.removes.length) console.log(JSON.stringify({ delta: { upserts, removes: msg.delta.removes } }));
    }
  });
  // Ages move on between changes: redraw now and then on a terminal.
  const tick = !json && tty ? setInterval(() => { if (g.managerId) draw(); }, 5000) : undefined;
  await new Promise<void>((resolve, reject) => {
    const stop = () => { clearInterval(tick); g.close(); resolve(); };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    g.onError((err) => { clearInterval(tick); process.off('SIGINT', stop); process.off('SIGTERM', stop); reject(err); });
  });
}
