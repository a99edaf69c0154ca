// Addresses of the real services the tests run against (started by scripts/services, which
// scripts/test runs first). A missing one fails the test run loudly; nothing skips.
import { randomBytes } from 'node:crypto';
import pg from 'pg';

function required(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the tests through scripts/test (it starts the services and sets it)`);
  return v;
}

export const realServices = {
  get databaseUrl() { return required('FLOTILLA_TEST_DATABASE_URL'); },
  get redisUrl() { return required('FLOTILLA_REDIS_URL'); },
  get etcdEndpoints() { return required('FLOTILLA_ETCD_ENDPOINTS').split(','); },
};

/** A database of its own for one test file, on the real PostgreSQL; drop() removes it. */
export async function freshDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const admin = new pg.Client({ connectionString: realServices.databaseUrl });
  await admin.connect();
  const name = `flotilla_t_${randomBytes(5).toString('hex')}`;
  try { await admin.query(`CREATE DATABASE ${name}`); } finally { await admin.end(); }
  const url = new URL(realServices.databaseUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: realServices.databaseUrl });
      await c.connect();
      try {
        // Not a superuser: WITH (FORCE) cannot end an autovacuum worker, so retry a plain DROP.
        for (let i = 0; ; i++) {
          try { await c.query(`DROP DATABASE IF EXISTS ${name}`); return; } catch (e) {
            if (i >= 20 || (e as { code?: string }).code !== '55006') throw e;
            await c.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, [name]).catch(() => undefined);
            await new Promise((r) => setTimeout(r, 250));
          }
        }
      } finally { await c.end(); }
    },
  };
}

/** A key prefix unique to this run, so runs never see each other's keys in Redis or etcd. */
export const runPrefix = (what: string) => `test/${what}/${randomBytes(4).toString('hex')}/`;
