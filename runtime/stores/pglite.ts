// The all-in-one mode's PostgreSQL: PGlite (Postgres compiled to WebAssembly) served over the
// wire protocol by @electric-sql/pglite-socket, so the very same `pg` code runs against it.
import { mkdirSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import type { Database } from './types.ts';
import { openPostgres } from './postgres.ts';

export interface EmbeddedPostgres { db: Database; url: string; close(): Promise<void> }

/** dataDir undefined = in memory (tests). */
export async function startEmbeddedPostgres(dataDir?: string): Promise<EmbeddedPostgres> {
  if (dataDir) mkdirSync(dataDir, { recursive: true });
  const pglite = await PGlite.create(dataDir);
  // The socket server queues statements from all connections into PGlite's single session;
  // unnamed prepared statements of two connections could interleave, so the pool uses one
  // connection (a transaction still holds it exclusively).
  const server = new PGLiteSocketServer({ db: pglite, host: '127.0.0.1', port: 0, maxConnections: 4 });
  await server.start();
  const url = `postgres://postgres@${server.getServerConn()}/postgres`;
  const db = openPostgres({ url, kind: 'pglite', max: 1 });
  return {
    db,
    url,
    async close() {
      await db.close();
      await server.stop();
      await pglite.close();
    },
  };
}
