// Admin routes (flotilla's own; more come with the tenancy issue). Admin keypairs only.
import type { AgentRegistry } from '../agents.ts';
import { requireAdmin } from './auth.ts';
import type { App } from './app.ts';

export function adminRoutes(app: App, deps: { agents: AgentRegistry }): void {
  app.get('/admin/agents', async (req) => {
    requireAdmin(req);
    return deps.agents.list();
  });
}
