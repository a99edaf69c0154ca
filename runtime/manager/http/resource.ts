// GET /resource/usage?start=&end=: the caller's rolled-up usage per hour (admins: any keypair's,
// with owner_access_key).
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { InvalidAPIParameters } from '../../../schema/errors.ts';
import type { Database } from '../../stores/types.ts';
import { usageReport } from '../usage.ts';
import type { App } from './app.ts';

const MAX_SPAN_MS = 366 * 86400_000;
const When = Type.String({ minLength: 8, maxLength: 40, description: 'ISO 8601 date or date-time' });

export function resourceRoutes(app: App, deps: { db: Database }): void {
  app.withTypeProvider<TypeBoxTypeProvider>().get('/resource/usage', {
    schema: { querystring: Type.Object({ start: When, end: When, owner_access_key: Type.Optional(Type.String({ maxLength: 20 })) }, { additionalProperties: false }) },
  }, async (req) => {
    const start = new Date(req.query.start);
    const end = new Date(req.query.end);
    if (Number.isNaN(start.getTime()) || Number.isNaN(end.getTime())) throw new InvalidAPIParameters('start and end: ISO 8601 dates or date-times');
    if (end <= start) throw new InvalidAPIParameters('end must be after start');
    if (end.getTime() - start.getTime() > MAX_SPAN_MS) throw new InvalidAPIParameters('at most 366 days at once');
    return usageReport(deps.db, req.owner!, start, end);
  });
}
