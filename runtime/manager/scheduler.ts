// First placement (the full scheduler with sequencers, selectors and resource groups is issue
// 6): PENDING sessions in arrival order, each placed on an ALIVE, connected agent of its resource
// group that has the image and free capacity for every kernel (single-node: all on one agent),
// preferring the agent with the most free CPU. Occupancy is derived from the kernels table
// (DESIGN.md §2 rule 5); one pass runs at a time and waits until its placements are durable, so
// the next pass sees them there.
import { OCCUPYING_KERNEL_STATUSES } from '../../schema/status.ts';
import { addSlots, fitsIn, shortSlots, slotNumber, subtractSlots, type ResourceSlots } from '../../schema/slots.ts';
import type { SessionContext } from '../../actors/session.ts';
import type { Logger } from '../log.ts';
import type { Database } from '../stores/types.ts';
import type { AgentRegistry } from './agents.ts';
import type { Supervisor } from './supervisor.ts';

export class Scheduler {
  private running: Promise<void> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: { db: Database; supervisor: Supervisor; agents: AgentRegistry; log: Logger; intervalMs: () => number }) {}

  start(): void {
    const tick = () => { this.request(); this.timer = setTimeout(tick, this.deps.intervalMs()); this.timer.unref(); };
    tick();
  }

  stop(): void { clearTimeout(this.timer); }

  /** Ask for a pass (coalesced: at most one runs, one more follows if asked meanwhile). */
  request(): void {
    if (this.running) { this.again = true; return; }
    this.running = this.pass()
      .catch((err) => this.deps.log.warn({ err: (err as Error).message }, 'scheduling pass failed'))
      .finally(() => {
        this.running = undefined;
        if (this.again) { this.again = false; this.request(); }
      });
  }

  /** Resolves when no pass is running. */
  async idle(): Promise<void> { while (this.running) await this.running; }

  /** Free capacity per ALIVE, connected agent, derived from the kernels table. */
  async freeCapacity(): Promise<Map<string, { free: ResourceSlots; resourceGroup: string; images: string[] }>> {
    const occupied = new Map<string, ResourceSlots>();
    const rows = (await this.deps.db.query<{ agent_id: string; requested_slots: ResourceSlots }>(
      `SELECT agent_id, requested_slots FROM kernels WHERE agent_id IS NOT NULL AND status = ANY($1::text[])`, [OCCUPYING_KERNEL_STATUSES],
    )).rows;
    for (const r of rows) occupied.set(r.agent_id, addSlots(occupied.get(r.agent_id) ?? {}, r.requested_slots));
    const out = new Map<string, { free: ResourceSlots; resourceGroup: string; images: string[] }>();
    for (const a of this.deps.agents.list()) {
      if (a.status !== 'ALIVE' || !a.connected) continue;
      out.set(a.agentId, { free: subtractSlots(a.availableSlots, occupied.get(a.agentId) ?? {}), resourceGroup: a.resourceGroup, images: a.images });
    }
    return out;
  }

  private async pass(): Promise<void> {
    const { supervisor } = this.deps;
    const pending: SessionContext[] = [];
    for (const id of supervisor.liveSessionIds()) {
      const snap = supervisor.snapshot(id);
      if (snap?.value === 'PENDING' && !snap.context.termination) pending.push(snap.context);
    }
    if (!pending.length) return;
    pending.sort((a, b) => (a.history[0]?.at ?? '').localeCompare(b.history[0]?.at ?? ''));
    const agents = await this.freeCapacity();
    const placed: string[] = [];
    for (const s of pending) {
      const need = s.kernels.reduce<ResourceSlots>((acc, k) => addSlots(acc, k.requestedSlots), {});
      const inGroup = [...agents.entries()].filter(([, a]) => a.resourceGroup === s.resourceGroup);
      const withImage = inGroup.filter(([, a]) => a.images.includes(s.kernels[0].image));
      const fitting = withImage.filter(([, a]) => fitsIn(need, a.free))
        .sort(([, x], [, y]) => slotNumber(y.free.cpu) - slotNumber(x.free.cpu));
      if (!fitting.length) {
        const reason = !inGroup.length ? `no alive agent in resource group ${s.resourceGroup}`
          : !withImage.length ? `no alive agent has the image ${s.kernels[0].image}`
          : `insufficient resources: ${[...new Set(withImage.flatMap(([, a]) => shortSlots(need, a.free)))].join(', ')}`;
        if (s.statusInfo !== reason) supervisor.send(s.sessionId, { type: 'PENDING_REASON', reason, data: { requested: need } });
        continue;
      }
      const [agentId, agent] = fitting[0];
      agent.free = subtractSlots(agent.free, need);
      supervisor.send(s.sessionId, { type: 'SCHEDULE', placements: Object.fromEntries(s.kernels.map((k) => [k.kernelId, agentId])) });
      placed.push(s.sessionId);
    }
    await Promise.all(placed.map((id) => supervisor.durable(id)));
    if (placed.length) this.deps.log.debug({ placed: placed.length }, 'sessions scheduled');
  }
}
