// `flotilla admin keypair create|ls|rm|deactivate`, `flotilla admin policy create|ls|set|rm`,
// `flotilla admin group create|ls|set|rm|allow|disallow`, `flotilla admin jobs`: the admin routes through the SDK (an admin keypair in the settings).
import { type Command, InvalidArgumentError, Option } from 'commander';
import { apiAction, clientFromSettings, table } from './session.ts';

const intOpt = (v: string) => { const n = Number(v); if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`not a non-negative integer: ${v}`); return n; };

export function registerAdminCommands(program: Command): void {
  const admin = program.command('admin').description('cluster administration (an admin keypair)');

  const keypair = admin.command('keypair').description('users\' keypairs');
  keypair.command('create <email>').description('create a keypair (and the user, when new); prints the secret key once')
    .option('--admin', 'an admin keypair')
    .option('--policy <name>', 'resource policy', 'default')
    .option('--rate-limit <n>', 'requests per 15 minutes (0: no limit)', intOpt)
    .option('--json', 'print the answer as JSON')
    .action(apiAction(async (email: string, o: { admin?: boolean; policy: string; rateLimit?: number; json?: boolean }) => {
      const kp = await clientFromSettings().admin.createKeypair({ email, is_admin: o.admin ?? false, resource_policy: o.policy, rate_limit: o.rateLimit });
      if (o.json) { console.log(JSON.stringify(kp, null, 2)); return; }
      console.log(`access key: ${kp.access_key}\nsecret key: ${kp.secret_key}\n(the secret key is not shown again)`);
    }));
  keypair.command('ls').description('list keypairs').option('--json', 'print the answer as JSON')
    .action(apiAction(async (o: { json?: boolean }) => {
      const list = await clientFromSettings().admin.listKeypairs();
      if (o.json) { console.log(JSON.stringify(list, null, 2)); return; }
      console.log(table(['ACCESS KEY', 'EMAIL', 'ADMIN', 'ACTIVE', 'POLICY', 'RATE LIMIT'],
        list.map((k) => [k.access_key, k.email, k.is_admin ? 'yes' : 'no', k.is_active ? 'yes' : 'no', k.resource_policy, String(k.rate_limit)])));
    }));
  keypair.command('deactivate <accessKey>').description('refuse the keypair\'s requests from now on')
    .action(apiAction(async (accessKey: string) => { await clientFromSettings().admin.deactivateKeypair(accessKey); console.log(`deactivated ${accessKey}`); }));
  keypair.command('rm <accessKey>').description('delete a keypair that has no live sessions')
    .action(apiAction(async (accessKey: string) => { await clientFromSettings().admin.deleteKeypair(accessKey); console.log(`deleted ${accessKey}`); }));

  const policy = admin.command('policy').description('keypair resource policies');
  const limits = (c: Command) => c
    .option('--max-sessions <n>', 'max_concurrent_sessions', intOpt)
    .option('--max-pending <n>', 'max_pending_session_count', intOpt)
    .option('--max-containers <n>', 'max_containers_per_session', intOpt)
    .option('--slots <slots>', 'total_resource_slots, e.g. cpu=8,mem=16g')
    .option('--idle-timeout <seconds>', 'idle_timeout (0: none)', intOpt)
    .option('--lifetime <seconds>', 'max_session_lifetime (0: none)', intOpt)
    .option('--max-folders <n>', 'max_vfolder_count', intOpt);
  type Limits = { maxSessions?: number; maxPending?: number; maxContainers?: number; slots?: string; idleTimeout?: number; lifetime?: number; maxFolders?: number };
  const toInput = (o: Limits) => ({
    max_concurrent_sessions: o.maxSessions, max_pending_session_count: o.maxPending, max_containers_per_session: o.maxContainers,
    total_resource_slots: o.slots ? Object.fromEntries(o.slots.split(',').map((p) => p.split('=').map((x) => x.trim()) as [string, string])) : undefined,
    idle_timeout: o.idleTimeout, max_session_lifetime: o.lifetime, max_vfolder_count: o.maxFolders,
  });
  limits(policy.command('create <name>').description('create a resource policy'))
    .action(apiAction(async (name: string, o: Limits) => { console.log(JSON.stringify(await clientFromSettings().admin.createResourcePolicy(name, toInput(o)), null, 2)); }));
  limits(policy.command('set <name>').description('change limits of a resource policy'))
    .action(apiAction(async (name: string, o: Limits) => { console.log(JSON.stringify(await clientFromSettings().admin.updateResourcePolicy(name, toInput(o)), null, 2)); }));
  policy.command('ls').description('list resource policies').option('--json', 'print the answer as JSON')
    .action(apiAction(async (o: { json?: boolean }) => {
      const list = await clientFromSettings().admin.listResourcePolicies();
      if (o.json) { console.log(JSON.stringify(list, null, 2)); return; }
      console.log(table(['NAME', 'SESSIONS', 'PENDING', 'CONTAINERS', 'SLOTS', 'IDLE', 'LIFETIME', 'FOLDERS'], list.map((p) => [
        p.name, String(p.max_concurrent_sessions), String(p.max_pending_session_count ?? '-'), String(p.max_containers_per_session),
        Object.entries(p.total_resource_slots).map(([k, v]) => `${k}=${v}`).join(',') || '-', String(p.idle_timeout), String(p.max_session_lifetime), String(p.max_vfolder_count),
      ])));
    }));
  policy.command('rm <name>').description('delete a resource policy no keypair uses')
    .action(apiAction(async (name: string) => { await clientFromSettings().admin.deleteResourcePolicy(name); console.log(`deleted ${name}`); }));

  const group = admin.command('group').description('resource groups and their scheduler options (live on every manager)');
  const groupOpts = (c: Command) => c
    .option('--description <text>', 'description')
    .option('--scheduler <name>', 'sequencer: fifo, lifo or drf')
    .option('--selector <name>', 'agent selector: dispersed, concentrated or roundrobin')
    .option('--pending-timeout <seconds>', 'cancel sessions PENDING this long (0: never)', intOpt)
    .option('--retries-to-skip <n>', 'failed passes after which a session stops blocking the queue (0: never)', intOpt)
    .addOption(new Option('--inactive', 'refuse new sessions in it').conflicts('active'))
    .option('--active', 'accept new sessions in it');
  type GroupOpts = { description?: string; scheduler?: string; selector?: string; pendingTimeout?: number; retriesToSkip?: number; inactive?: boolean; active?: boolean };
  const toGroup = (o: GroupOpts) => ({
    description: o.description, scheduler: o.scheduler as 'fifo' | undefined, agent_selector: o.selector as 'dispersed' | undefined,
    pending_timeout: o.pendingTimeout, num_retries_to_skip: o.retriesToSkip, is_active: o.inactive ? false : o.active ? true : undefined,
  });
  groupOpts(group.command('create <name>').description('create a resource group'))
    .action(apiAction(async (name: string, o: GroupOpts) => { console.log(JSON.stringify(await clientFromSettings().admin.createResourceGroup(name, toGroup(o)), null, 2)); }));
  groupOpts(group.command('set <name>').description('change a resource group'))
    .action(apiAction(async (name: string, o: GroupOpts) => { console.log(JSON.stringify(await clientFromSettings().admin.updateResourceGroup(name, toGroup(o)), null, 2)); }));
  group.command('ls').description('list resource groups').option('--json', 'print the answer as JSON')
    .action(apiAction(async (o: { json?: boolean }) => {
      const list = await clientFromSettings().admin.listResourceGroups();
      if (o.json) { console.log(JSON.stringify(list, null, 2)); return; }
      console.log(table(['NAME', 'ACTIVE', 'SCHEDULER', 'SELECTOR', 'PENDING TIMEOUT', 'RETRIES TO SKIP', 'KEYPAIRS'], list.map((g) => [
        g.name, g.is_active ? 'yes' : 'no', g.scheduler, g.agent_selector, String(g.pending_timeout), String(g.num_retries_to_skip), g.allowed_keypairs.join(',') || '-',
      ])));
    }));
  group.command('rm <name>').description('delete a resource group no agent or session uses')
    .action(apiAction(async (name: string) => { await clientFromSettings().admin.deleteResourceGroup(name); console.log(`deleted ${name}`); }));
  group.command('allow <name> <accessKeys...>').description('let keypairs create sessions in the group')
    .action(apiAction(async (name: string, keys: string[]) => { console.log(JSON.stringify(await clientFromSettings().admin.allowResourceGroup(name, keys), null, 2)); }));
  group.command('disallow <name> <accessKeys...>').description('take the group back from keypairs')
    .action(apiAction(async (name: string, keys: string[]) => { console.log(JSON.stringify(await clientFromSettings().admin.disallowResourceGroup(name, keys), null, 2)); }));

  admin.command('jobs').description('the periodic jobs and their last runs').option('--json', 'print the answer as JSON')
    .action(apiAction(async (o: { json?: boolean }) => {
      const jobs = await clientFromSettings().admin.jobs();
      if (o.json) { console.log(JSON.stringify(jobs, null, 2)); return; }
      console.log(table(['JOB', 'SCHEDULE', 'LAST OUTCOME', 'LAST FINISHED', 'RUNS', 'FAILURES'],
        jobs.map((j) => [j.name, j.schedule, j.lastOutcome ?? '-', j.lastFinished ?? '-', String(j.runs), String(j.failures)])));
    }));
}
