// One suite for every Database implementation (real PostgreSQL, embedded PGlite).
import * as assert from 'uvu/assert';
import { listMigrations, migrate } from '../../../schema/migrate.ts';
import type { Database } from '../../../runtime/stores/types.ts';
import { suite } from '../../helpers/suite.ts';

export function databaseConformance(name: string, open: () => Promise<{ db: Database; close(): Promise<void> }>) {
  const t = suite<{ db: Database; close(): Promise<void> }>(`Database conformance: ${name}`);
  t.before(async (ctx) => Object.assign(ctx, await open()));
  t.after(async (ctx) => ctx.close());

  t('migrations apply once, and a second run changes nothing', async ({ db }) => {
    const first = await migrate(db);
    assert.equal(first, listMigrations().map((m) => m.version));
    const tables = async () => (await db.query<{ t: string }>(
      `SELECT string_agg(table_name, ',' ORDER BY table_name) AS t FROM information_schema.tables WHERE table_schema = 'public'`)).rows[0].t;
    const before = await tables();
    const second = await migrate(db);
    assert.equal(second, []);
    assert.equal(await tables(), before);
    for (const table of ['sessions', 'kernels', 'agents', 'keypairs', 'users', 'resource_policies', 'resource_groups',
      'session_events', 'vfolders', 'vfolder_permissions', 'usage_records', 'schema_migrations']) {
      assert.ok(before.split(',').includes(table), `table ${table} exists`);
    }
  });

  t('a broken migration rolls back whole and is not recorded', async ({ db }) => {
    const broken = [{ version: 9999, name: 'broken', sql: `CREATE TABLE half_done (id int); INSERT INTO half_done VALUES (1); SELECT no_such_function();` }];
    let err: Error | undefined;
    try { await migrate(db, broken); } catch (e) { err = e as Error; }
    assert.ok(err, 'migrate throws');
    assert.match(err!.message, /9999_broken failed and was rolled back/);
    const t1 = await db.query(`SELECT 1 FROM information_schema.tables WHERE table_name = 'half_done'`);
    assert.is(t1.rowCount, 0);
    const v = await db.query(`SELECT 1 FROM schema_migrations WHERE version = 9999`);
    assert.is(v.rowCount, 0);
  });

  t('CHECK constraints refuse a status Backend.AI does not have', async ({ db }) => {
    let err: Error | undefined;
    try {
      await db.query(`INSERT INTO agents (id, status, resource_group) VALUES ('i-bad', 'SLEEPING', 'default')`);
    } catch (e) { err = e as Error; }
    assert.ok(err);
    assert.match(err!.message, /check constraint/);
    await db.query(`INSERT INTO agents (id, status, resource_group) VALUES ('i-good', 'ALIVE', 'default')`);
    await db.query(`DELETE FROM agents WHERE id = 'i-good'`);
  });

  t('tx commits on success and rolls back on throw', async ({ db }) => {
    await db.tx(async (c) => { await c.query(`INSERT INTO resource_groups (name) VALUES ('committed')`); });
    await db.tx(async (c) => {
      await c.query(`INSERT INTO resource_groups (name) VALUES ('rolled-back')`);
      throw new Error('abort');
    }).catch(() => undefined);
    const rows = (await db.query<{ name: string }>(`SELECT name FROM resource_groups WHERE name IN ('committed', 'rolled-back')`)).rows;
    assert.equal(rows.map((r) => r.name), ['committed']);
  });

  t('session events get increasing sequence numbers', async ({ db }) => {
    const ids = [];
    for (let i = 0; i < 3; i++) {
      const r = await db.query<{ seq: string }>(
        `INSERT INTO session_events (session_id, access_key, name, status) VALUES (gen_random_uuid(), 'AKTEST', 'session_enqueued', 'PENDING') RETURNING seq`);
      ids.push(Number(r.rows[0].seq));
    }
    assert.ok(ids[0] < ids[1] && ids[1] < ids[2]);
  });

  t('concurrent transactions do not interleave', async ({ db }) => {
    await db.query(`CREATE TABLE IF NOT EXISTS tx_probe (k int PRIMARY KEY, v int)`);
    await Promise.all(Array.from({ length: 20 }, (_, i) => db.tx(async (c) => {
      await c.query(`INSERT INTO tx_probe VALUES ($1, 0)`, [i]);
      await c.query(`UPDATE tx_probe SET v = v + 1 WHERE k = $1`, [i]);
    })));
    const r = await db.query<{ n: string; s: string }>(`SELECT count(*) AS n, sum(v) AS s FROM tx_probe`);
    assert.equal([Number(r.rows[0].n), Number(r.rows[0].s)], [20, 20]);
  });

  t.run();
}
