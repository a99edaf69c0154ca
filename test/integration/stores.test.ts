// The store conformance suites, each against the real service and its all-in-one stand-in,
// plus what a store that is down looks like to its caller.
import * as assert from 'uvu/assert';
import { openEtcd } from '../../runtime/stores/etcd.ts';
import { openMemoryConfig } from '../../runtime/stores/memory-config.ts';
import { openMemoryLiveness } from '../../runtime/stores/memory-liveness.ts';
import { startEmbeddedPostgres } from '../../runtime/stores/pglite.ts';
import { openPostgres } from '../../runtime/stores/postgres.ts';
import { openRedis } from '../../runtime/stores/redis.ts';
import { ServiceUnavailable } from '../../schema/errors.ts';
import { freshDatabase, realServices } from '../helpers/services.ts';
import { suite } from '../helpers/suite.ts';
import { configConformance } from './stores/config.conformance.ts';
import { databaseConformance } from './stores/database.conformance.ts';
import { livenessConformance } from './stores/liveness.conformance.ts';

databaseConformance('PostgreSQL 15', async () => {
  const fresh = await freshDatabase();
  const db = openPostgres({ url: fresh.url });
  return { db, close: async () => { await db.close(); await fresh.drop(); } };
});
databaseConformance('PGlite (all-in-one)', async () => {
  const e = await startEmbeddedPostgres();
  return { db: e.db, close: e.close };
});
livenessConformance('Redis', async () => openRedis({ url: realServices.redisUrl }));
livenessConformance('in-process (all-in-one)', async () => openMemoryLiveness());
configConformance('etcd', async () => openEtcd({ endpoints: realServices.etcdEndpoints }));
configConformance('in-process (all-in-one)', async () => openMemoryConfig());

// A port nothing listens on: each client must fail fast with an error naming its store.
const t = suite('stores that are down');
const DEAD = '127.0.0.1:1';
async function failure(what: () => Promise<unknown>): Promise<Error> {
  const started = Date.now();
  try { await what(); } catch (e) {
    assert.ok(Date.now() - started < 10_000, 'fails within its connect timeout');
    return e as Error;
  }
  throw new Error('expected a failure');
}
t('PostgreSQL down: ServiceUnavailable naming PostgreSQL', async () => {
  const db = openPostgres({ url: `postgres://x:y@${DEAD}/z`, connectTimeoutMs: 1000 });
  const e = await failure(() => db.ping());
  assert.instance(e, ServiceUnavailable);
  assert.match(e.message, /PostgreSQL is unavailable/);
  await db.close();
});
t('Redis down: ServiceUnavailable naming Redis', async () => {
  const r = openRedis({ url: `redis://${DEAD}`, connectTimeoutMs: 1000 });
  const e = await failure(() => r.ping());
  assert.instance(e, ServiceUnavailable);
  assert.match(e.message, /Redis is unavailable/);
  await r.close();
});
t('etcd down: ServiceUnavailable naming etcd', async () => {
  const c = openEtcd({ endpoints: [`http://${DEAD}`], dialTimeoutMs: 1000, callTimeoutMs: 2000 });
  const e = await failure(() => c.get('x'));
  assert.instance(e, ServiceUnavailable);
  assert.match(e.message, /etcd is unavailable/);
  await c.close();
});
t.run();
