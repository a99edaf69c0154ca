// The `flotilla` command line. Subcommands named as DESIGN.md §10.
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { loadProcessSettings } from '../../config/settings.ts';
import { CLUSTER_CONFIG_PREFIX, encodeClusterValue, validateClusterFile } from '../../config/cluster.ts';
import { ConfigError, FlotillaError } from '../../schema/errors.ts';
import { migrate } from '../../schema/migrate.ts';
import { embeddedDatabase } from '../stores/index.ts';
import { openPostgres } from '../stores/postgres.ts';
import { openEtcd } from '../stores/etcd.ts';
import { registerActorCommands } from './actors.ts';
import { registerAdminCommands } from './admin.ts';
import { registerDaemonCommands } from './daemons.ts';
import { registerFileCommands } from './files.ts';
import { registerFolderCommands } from './folders.ts';
import { registerRunCommands } from './run.ts';
import { registerSessionCommands } from './session.ts';

const program = new Command();
program.name('flotilla').description('compute sessions on a cluster of Docker agents, in the spirit of Backend.AI').version('0.1.0');
// Exit codes: 1 is an API error, 2 a usage error (commander would use 1). Set before the
// commands are added: each inherits it.
program.exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));

const schema = program.command('schema').description('the PostgreSQL schema');
schema.command('migrate').description('apply the SQL migrations that are not applied yet (FLOTILLA_DATABASE_URL; unset: the all-in-one database in FLOTILLA_DATA_DIR)')
  .action(async () => {
    const settings = loadProcessSettings();
    const db = settings.databaseUrl ? openPostgres({ url: settings.databaseUrl }) : await embeddedDatabase(settings.dataDir);
    try {
      const applied = await migrate(db);
      console.log(applied.length ? `applied migrations: ${applied.join(', ')}` : 'schema is up to date');
    } finally { await db.close(); }
  });

const config = program.command('config').description('the cluster config in etcd');
config.command('load <file>').description('validate a JSON file of dotted keys and store it in etcd (FLOTILLA_ETCD_ENDPOINTS)')
  .action(async (file: string) => {
    const values = validateClusterFile(JSON.parse(readFileSync(file, 'utf8')));
    const settings = loadProcessSettings();
    if (!settings.etcdEndpoints.length) throw new ConfigError('FLOTILLA_ETCD_ENDPOINTS', 'is required to load the cluster config');
    const etcd = openEtcd({ endpoints: settings.etcdEndpoints, namespace: settings.etcdNamespace });
    try {
      for (const [k, v] of Object.entries(values)) await etcd.put(CLUSTER_CONFIG_PREFIX + k, encodeClusterValue(v));
      console.log(`loaded ${Object.keys(values).length} keys into etcd`);
    } finally { await etcd.close(); }
  });

const images = program.command('images').description('kernel images');
images.command('build').description('build the kernel images locally with docker import (idempotent)')
  .option('--force', 'rebuild even when the image is up to date')
  .option('--only <names>', 'comma-separated image names (python, shell)')
  .action(async (opts: { force?: boolean; only?: string }) => {
    const { buildImages } = await import('../../images/build.ts');
    const results = await buildImages({ force: opts.force, names: opts.only?.split(','), onProgress: (line) => console.log(line) });
    for (const r of results) console.log(`${r.name}: ${r.built ? 'built' : 'up to date'} (${(r.bytes / 1e6).toFixed(1)} MB)`);
  });

registerSessionCommands(program);
registerAdminCommands(program);
registerActorCommands(program);
registerDaemonCommands(program);
registerRunCommands(program);
registerFileCommands(program);
registerFolderCommands(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof ConfigError || err instanceof FlotillaError) {
    console.error(`flotilla: ${err.message}`);
    process.exit(2);
  }
  console.error(err);
  process.exit(1);
});
