// `flotilla session ...`: the session routes through the SDK. Exit codes: 0 ok, 1 the API
// answered with an error (or no manager answered), 2 wrong usage or settings.
import { type Command, InvalidArgumentError } from 'commander';
import { loadProcessSettings } from '../../config/settings.ts';
import { ConfigError, FlotillaError } from '../../schema/errors.ts';
import { SESSION_STATUSES, type SessionStatus } from '../../schema/status.ts';
import { Client, type ResourceSlots, type SessionInfo } from '../sdk/index.ts';
import { withSpinner } from './progress.ts';

// Backend.AI's own client reads these names; they count when the flotilla name is unset.
const BACKEND_AI_NAMES = {
  FLOTILLA_MANAGER_URLS: 'BACKEND_ENDPOINT',
  FLOTILLA_ACCESS_KEY: 'BACKEND_ACCESS_KEY',
  FLOTILLA_SECRET_KEY: 'BACKEND_SECRET_KEY',
} as const;

/** An SDK client for the managers and keypair of the process settings. */
export function clientFromSettings(env: NodeJS.ProcessEnv = process.env): Client {
  const merged = { ...env };
  for (const [ours, theirs] of Object.entries(BACKEND_AI_NAMES)) if (!merged[ours] && merged[theirs]) merged[ours] = merged[theirs];
  const settings = loadProcessSettings(merged);
  if (!settings.accessKey || !settings.secretKey) {
    throw new ConfigError(settings.accessKey ? 'FLOTILLA_SECRET_KEY' : 'FLOTILLA_ACCESS_KEY',
      'no keypair to sign requests with: set FLOTILLA_ACCESS_KEY and FLOTILLA_SECRET_KEY (or BACKEND_ACCESS_KEY and BACKEND_SECRET_KEY)');
  }
  return new Client({ endpoints: settings.managerUrls, accessKey: settings.accessKey, secretKey: settings.secretKey });
}

/** A problem on this side (a local file or path): one line on stderr, exit code 2. */
export class LocalError extends Error {}

/** An action that also touches local files: their errors exit 2, the API's exit 1. */
export function localAction<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return apiAction(async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      if (!(err instanceof LocalError) && (err as NodeJS.ErrnoException).syscall === undefined) throw err;
      console.error(`flotilla: ${(err as Error).message}`);
      process.exitCode = 2;
    }
  });
}

/** Run an action; an API error becomes one line on stderr and exit code 1. */
export function apiAction<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (err) {
      if (!(err instanceof FlotillaError)) throw err;
      const parts = [err.title.replace(/\.$/, ''), err.message].filter((p, i, all) => p && all.indexOf(p) === i);
      console.error(`flotilla: ${parts.join(': ')}`);
      process.exitCode = 1;
    }
  };
}

const parseCores = (raw: string): number => {
  const n = Number(raw);
  if (!raw.trim() || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number of cores.');
  return n;
};
// Sizes such as "1g" are sent as written, the way Backend.AI's CLI sends them; plain digits as bytes.
const parseSize = (raw: string): number | string => {
  if (/^\d+$/.test(raw)) return Number(raw);
  if (/^\d+(\.\d+)?[kmgtpe]$/i.test(raw)) return raw.toLowerCase();
  throw new InvalidArgumentError('expected bytes or a size such as 512m or 2g.');
};
export const parseSeconds = (raw: string): number => {
  if (!/^\d+$/.test(raw)) throw new InvalidArgumentError('expected whole seconds.');
  return Number(raw);
};
const parseStatuses = (raw: string): SessionStatus[] => {
  const list = raw.split(',').map((s) => s.trim().toUpperCase()).filter(Boolean);
  const unknown = list.filter((s) => !(SESSION_STATUSES as readonly string[]).includes(s));
  if (!list.length || unknown.length) throw new InvalidArgumentError(`expected statuses among ${SESSION_STATUSES.join(', ')}.`);
  return list as SessionStatus[];
};

/** `2022-03-15T12:00:00.123Z` → `2022-03-15 12:00:00` (UTC); other strings unchanged, null → `-`. */
function when(iso: string | null): string {
  if (!iso) return '-';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().slice(0, 19).replace('T', ' ');
}

const slots = (s: ResourceSlots | null | undefined): string =>
  Object.entries(s ?? {}).map(([k, v]) => `${k}=${v}`).join(' ') || '-';

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}

function describeSession(s: SessionInfo): string {
  const lines = [
    `name:        ${s.sessionName}`,
    `id:          ${s.sessionId}`,
    `image:       ${s.image}`,
    `status:      ${s.status}${s.statusInfo ? ` (${s.statusInfo})` : ''}`,
    `created:     ${when(s.creationTime)}`,
    `terminated:  ${when(s.terminationTime)}`,
    `requested:   ${slots(s.requestedSlots)}`,
    `occupied:    ${slots(s.occupiedSlots)}`,
    `queries:     ${s.numQueriesExecuted}`,
    'kernels:',
    ...table(['HOSTNAME', 'ROLE', 'STATUS', 'AGENT', 'CONTAINER', 'KERNEL'], s.kernels.map((k) => [
      k.hostname, k.role, k.status, k.agentId ?? '-', k.containerId?.slice(0, 12) ?? '-', k.kernelId,
    ])).split('\n').map((l) => `  ${l}`),
    'status history:',
    ...s.statusHistory.map((h) => `  ${when(h.at)}  ${h.status}`),
  ];
  return lines.join('\n');
}

const print = (v: unknown): void => console.log(JSON.stringify(v, null, 2));

/** Add `flotilla session create|ls|info|rm|logs` to the program. */
export function registerSessionCommands(program: Command): void {
  const session = program.command('session').description('compute sessions (FLOTILLA_MANAGER_URLS, FLOTILLA_ACCESS_KEY, FLOTILLA_SECRET_KEY)');

  session.command('create <image>').description('start a session and wait until it runs')
    .option('--name <name>', 'session name (default: sess-<random>)')
    .option('--cpu <cores>', 'CPU cores', parseCores)
    .option('--mem <size>', 'memory: bytes, or with a unit (512m, 2g)', parseSize)
    .option('--enqueue-only', 'return as soon as the session is queued')
    .option('--max-wait <s>', 'seconds to wait for RUNNING (0 = the manager\'s default)', parseSeconds)
    .option('-m, --mount <folder>', 'mount a virtual folder at /home/work/<folder> (repeatable)', (v: string, all: string[] = []) => [...all, v])
    .option('--json', 'print the answer as JSON')
    .action(apiAction(async (image: string, opts: { name?: string; cpu?: number; mem?: number | string; enqueueOnly?: boolean; maxWait?: number; mount?: string[]; json?: boolean }) => {
      // Without --cpu/--mem no resources are sent, so the manager's defaults apply.
      const resources = opts.cpu === undefined && opts.mem === undefined ? undefined : { cpu: opts.cpu, mem: opts.mem };
      const r = await withSpinner(`starting a ${image} session`, clientFromSettings().sessions.create({
        image, name: opts.name, resources, enqueueOnly: opts.enqueueOnly, maxWaitSeconds: opts.maxWait, mounts: opts.mount,
      }));
      if (opts.json) return print(r);
      console.log(`${r.created ? 'created' : 'reused'} session ${r.sessionName} (${r.sessionId}): ${r.status}`);
    }));

  session.command('ls').description('list your sessions')
    .option('--status <list>', 'only these statuses, comma-separated (e.g. RUNNING,PENDING)', parseStatuses)
    .option('--json', 'print the answer as JSON')
    .action(apiAction(async (opts: { status?: SessionStatus[]; json?: boolean }) => {
      const { items, total } = await clientFromSettings().sessions.list({ status: opts.status });
      if (opts.json) return print({ items, total });
      console.log(table(['NAME', 'ID', 'IMAGE', 'STATUS', 'CREATED'],
        items.map((s) => [s.sessionName, s.sessionId, s.image, s.status, when(s.creationTime)])));
      if (total > items.length) console.error(`(${items.length} of ${total} sessions shown)`);
    }));

  session.command('info <session>').description('details of a session (name or id), with its status history')
    .option('--json', 'print the answer as JSON')
    .action(apiAction(async (nameOrId: string, opts: { json?: boolean }) => {
      const info = await clientFromSettings().sessions.get(nameOrId);
      if (opts.json) return print(info);
      console.log(describeSession(info));
    }));

  session.command('rm <session>').description('destroy a session (name or id)')
    .option('--forced', 'skip the graceful stop')
    .action(apiAction(async (nameOrId: string, opts: { forced?: boolean }) => {
      await withSpinner(`destroying ${nameOrId}`, clientFromSettings().sessions.destroy(nameOrId, { forced: opts.forced }));
      console.log(`destroyed session ${nameOrId}`);
    }));

  session.command('restart <session>').description('restart the session\'s kernels (name or id): fresh interpreters, same containers and files')
    .action(apiAction(async (nameOrId: string) => {
      const client = clientFromSettings();
      await withSpinner(`restarting ${nameOrId}`, client.sessions.restart(nameOrId));
      console.log(`restarted session ${nameOrId}: ${(await client.sessions.get(nameOrId)).status}`);
    }));

  session.command('logs <session>').description('container output of the session\'s main kernel')
    .action(apiAction(async (nameOrId: string) => {
      const logs = await clientFromSettings().sessions.logs(nameOrId);
      process.stdout.write(logs && !logs.endsWith('\n') ? `${logs}\n` : logs);
    }));
}
