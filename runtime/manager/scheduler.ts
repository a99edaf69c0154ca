// The scheduler (DESIGN.md §5): per resource group, the group's sequencer offers its PENDING
// sessions in order and its agent selector places each one all-or-nothing (single-node: every
// kernel on one agent; multi-node: kernel by kernel, spread first). Free capacity is derived
// from the kernels table (DESIGN.md §2 rule 5) and lowered as the pass places; one pass runs at
// a time and waits until its placements are durable and counted, so the next pass sees them: no
// agent is promised more than it declared, whatever the interleaving. A pass that only follows
// enqueues starts from the last read plus the placements committed since (see occupancyRead).
//
// A session that cannot be placed stays PENDING with the reason in statusInfo and the details
// (slot shortfalls, the agents that came closest, retries) in statusData.scheduler. Only a
// session that lacks *free* resources blocks the sessions behind it (strict order), and only
// for `num_retries_to_skip` passes when that is set; one that could never be placed as the
// group stands (no agent, no agent with the image, bigger than every agent) never blocks.
// Past the group's `pending_timeout` a session is CANCELLED with reason `pending-timeout`.
import { OCCUPYING_KERNEL_STATUSES } from '../../schema/status.ts';
import { fromSlotUnits, slotUnits, type ResourceSlots } from '../../schema/slots.ts';
import type { SessionContext } from '../../actors/session.ts';
import type { Logger } from '../log.ts';
import type { Database } from '../stores/types.ts';
import type { AgentRegistry } from './agents.ts';
import { fits, selectAgent, type PlacementAgent, type SelectorState } from './agent-selectors.ts';
import type { ResourceGroups, SchedulerOptions } from './resource-groups.ts';
import { sequence, type QueuedSession } from './sequencers.ts';
import type { Placement, Supervisor } from './supervisor.ts';

/** What a PENDING session's statusData.scheduler holds. */
export interface PendingDetails {
  /** `no-agent`, `no-image`, `exceeds-capacity`, `insufficient-resources` or `queued` (behind a blocked head). */
  reason: string;
  retries: number;
  lastTry: string;
  requested?: ResourceSlots;
  /** Slots no agent with the image has free enough of. */
  shortSlots?: string[];
  /** Up to three agents that came closest, with what they have free and lack. */
  closestAgents?: Array<{ agentId: string; free: ResourceSlots; short: string[] }>;
  blockedBy?: string;
}

interface Candidate extends QueuedSession {
  ctx: SessionContext;
  kernels: Array<{ kernelId: string; image: string; need: Float64Array }>;
  multiNode: boolean;
}

/** Placements between two turns of the event loop within a pass. */
const YIELD_EVERY = 500;
/** Placements per bulk commit (Supervisor.commitPlacements). */
const SCHEDULE_BATCH = 1000;
/** Bulk commits of a pass in flight at once (PostgreSQL works on one while the next is sent). */
const COMMITS_IN_FLIGHT = 2;

interface Unplaced { info: string; details: Omit<PendingDetails, 'retries' | 'lastTry'>; blocks: boolean }

/** Slot units occupied per agent, and per resource group and keypair (for DRF). */
interface Occupancy { byAgent: Map<string, Map<string, number>>; byKeypair: Map<string, Map<string, Map<string, number>>> }

const at = <V>(m: Map<string, V>, key: string, make: () => V): V => {
  let v = m.get(key);
  if (v === undefined) m.set(key, v = make());
  return v;
};

export class Scheduler {
  private running: Promise<void> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private stopped = true;
  /** Failed placement tries per PENDING session (seeded from its statusData after a restore). */
  private readonly retries = new Map<string, number>();
  private readonly selectorState = new Map<string, SelectorState>();
  private readonly imageSets = new WeakMap<string[], ReadonlySet<string>>();
  /**
   * The occupancy passes start from: read from the kernels table, then kept up by adding what
   * this scheduler's passes commit. A placement is the only way into an occupying status, so the
   * kept figures are never below the table's (a kernel that ended meanwhile still counts until
   * the next read), and no agent is promised more than it declared. The table is read again on
   * every request but an enqueue's (a session ended, an agent or a group changed, the safety
   * tick), after a placement commit failed (it may have landed), and at least every interval:
   * at 20,000 live kernels the read was most of PostgreSQL's work under a steady arrival.
   */
  private occupancyRead?: { at: number; occupancy: Occupancy };
  private reread = true;

  constructor(private readonly deps: {
    db: Database; supervisor: Supervisor; agents: AgentRegistry; groups: ResourceGroups; log: Logger; intervalMs: () => number;
  }) {}

  start(): void {
    this.stopped = false;
    this.reread = true;
    const tick = () => { this.request(); this.timer = setTimeout(tick, this.deps.intervalMs()); this.timer.unref(); };
    tick();
  }

  stop(): void { this.stopped = true; clearTimeout(this.timer); clearTimeout(this.deadlineTimer); }

  /**
   * Ask for a pass (coalesced: at most one runs, one more follows if asked meanwhile). `reread`
   * false only when nothing can have freed capacity (an enqueue): the pass may start from the
   * occupancy kept since the last read of the kernels table.
   */
  request(reread = true): void {
    if (reread) this.reread = true;
    if (this.stopped) return;
    if (this.running) { this.again = true; return; }
    this.running = this.pass()
      .catch((err) => this.deps.log.warn({ err: (err as Error).message }, 'scheduling pass failed'))
      .finally(() => {
        this.running = undefined;
        if (this.again) { this.again = false; this.request(false); } // whoever asked meanwhile set reread if it was needed
      });
  }

  /** Resolves when no pass is running. */
  async idle(): Promise<void> { while (this.running) await this.running; }

  private async pass(): Promise<void> {
    const { supervisor, groups } = this.deps;
    const now = Date.now();
    const pendingByGroup = new Map<string, SessionContext[]>();
    for (const id of supervisor.pendingSessionIds()) {
      const snap = supervisor.snapshot(id);
      if (snap?.value !== 'PENDING' || snap.context.termination) continue;
      const list = pendingByGroup.get(snap.context.resourceGroup);
      if (list) list.push(snap.context); else pendingByGroup.set(snap.context.resourceGroup, [snap.context]);
    }
    for (const id of this.retries.keys()) if (supervisor.snapshot(id)?.value !== 'PENDING') this.retries.delete(id);
    if (!pendingByGroup.size) return;

    if (this.reread || !this.occupancyRead || now - this.occupancyRead.at >= this.deps.intervalMs()) {
      this.reread = false; // a request during the read sets it again
      this.occupancyRead = { at: now, occupancy: await this.occupancy() };
    }
    const occupancy = this.occupancyRead.occupancy;
    const cancelled: string[] = [];
    let scheduled = 0;
    let nextDeadline = Infinity;
    for (const [group, sessions] of pendingByGroup) {
      const opts = groups.optionsOf(group);
      const timeoutMs = opts.pending_timeout * 1000;
      const live: SessionContext[] = [];
      for (const ctx of sessions) {
        const since = Date.parse(ctx.history[0]?.at ?? '') || now;
        if (timeoutMs > 0 && now - since >= timeoutMs) {
          supervisor.send(ctx.sessionId, { type: 'CANCEL', reason: 'pending-timeout' });
          cancelled.push(ctx.sessionId); // durable before the next pass
        } else {
          live.push(ctx);
          if (timeoutMs > 0) nextDeadline = Math.min(nextDeadline, since + timeoutMs);
        }
      }
      if (live.length) scheduled += await this.placeGroup(group, opts, live, occupancy, now);
    }
    this.armPendingDeadline(nextDeadline);
    await Promise.all(cancelled.map((id) => supervisor.durable(id)));
    if (scheduled) this.deps.log.debug({ scheduled }, 'scheduling pass done');
  }

  /**
   * Slot units occupied per agent and, per resource group, per keypair (for DRF), summed by
   * PostgreSQL from the kernels table: a pass reads a row per agent and slot, not one per live
   * kernel (with 10,000 running kernels, parsing every row on every pass was most of a pass).
   * The amounts are numeric, so the sums are exact.
   */
  private async occupancy(): Promise<Occupancy> {
    const rows = (await this.deps.db.query<{ per_keypair: number; agent_id: string | null; resource_group: string | null; access_key: string | null; slot: string; amount: string }>(
      `SELECT GROUPING(k.agent_id) AS per_keypair, k.agent_id, a.resource_group, k.access_key, s.key AS slot, trim_scale(sum(s.value::numeric))::text AS amount
         FROM kernels k JOIN agents a ON a.id = k.agent_id CROSS JOIN LATERAL jsonb_each_text(k.requested_slots) s
        WHERE k.status = ANY($1::text[])
        GROUP BY GROUPING SETS ((k.agent_id, s.key), (a.resource_group, k.access_key, s.key))`, [OCCUPYING_KERNEL_STATUSES],
    )).rows;
    const byAgent = new Map<string, Map<string, number>>();
    const byKeypair = new Map<string, Map<string, Map<string, number>>>();
    for (const r of rows) {
      const units = slotUnits(r.slot, r.amount);
      if (!r.per_keypair) at(byAgent, r.agent_id!, () => new Map()).set(r.slot, units);
      else at(at(byKeypair, r.resource_group!, () => new Map()), r.access_key!, () => new Map<string, number>()).set(r.slot, units);
    }
    return { byAgent, byKeypair };
  }

  /**
   * Place what fits of one group's PENDING sessions; returns how many were scheduled. The
   * placements are committed in bulk, SCHEDULE_BATCH per transaction (Supervisor.commitPlacements),
   * up to COMMITS_IN_FLIGHT at once while the pass places the next ones; the actors get their SCHEDULE
   * once all are committed, while the next pass may already run.
   * Every YIELD_EVERY placements the event loop turns, so those commits go on and agents'
   * heartbeats are served during a pass of thousands (the free capacity it lowers stays this
   * pass's own, so nothing is promised twice).
   */
  private async placeGroup(
    group: string, opts: SchedulerOptions, sessions: SessionContext[],
    occupancy: Occupancy, now: number,
  ): Promise<number> {
    const { supervisor, agents: registry } = this.deps;
    const views = registry.list().filter((a) => a.resourceGroup === group && a.status === 'ALIVE' && a.connected)
      .sort((a, b) => (a.agentId < b.agentId ? -1 : 1));
    // The slot names of this pass: every slot an agent declares or a session asks for.
    const names = new Set<string>();
    for (const a of views) for (const k of Object.keys(a.availableSlots)) names.add(k);
    for (const s of sessions) for (const k of s.kernels) for (const n of Object.keys(k.requestedSlots)) names.add(n);
    const slots = [...names];
    const vector = (get: (slot: string) => number) => Float64Array.from(slots, get);
    const agents: PlacementAgent[] = views.map((a) => {
      const used = occupancy.byAgent.get(a.agentId);
      const capacity = vector((k) => slotUnits(k, a.availableSlots[k]));
      return { agentId: a.agentId, images: this.imageSet(a.images), capacity, free: capacity.map((c, i) => Math.max(0, c - (used?.get(slots[i]) ?? 0))) };
    });
    const total = new Float64Array(slots.length);
    for (const a of agents) for (let i = 0; i < total.length; i++) total[i] += a.capacity[i];
    const occupied = new Map<string, Float64Array>();
    for (const [key, m] of occupancy.byKeypair.get(group) ?? []) occupied.set(key, vector((k) => m.get(k) ?? 0));

    const candidates: Candidate[] = sessions.map((ctx) => {
      const kernels = ctx.kernels.map((k) => ({ kernelId: k.kernelId, image: k.image, need: vector((n) => slotUnits(n, k.requestedSlots[n])) }));
      const need = new Float64Array(slots.length);
      for (const k of kernels) for (let i = 0; i < need.length; i++) need[i] += k.need[i];
      return {
        sessionId: ctx.sessionId, accessKey: ctx.accessKey, createdAt: Date.parse(ctx.history[0]?.at ?? '') || now, need, ctx, kernels,
        multiNode: ctx.clusterMode === 'multi-node' && kernels.length > 1,
      };
    });
    const byId = new Map(candidates.map((c) => [c.sessionId, c]));
    let state = this.selectorState.get(group);
    if (!state) this.selectorState.set(group, state = { cursor: 0 });
    const toSlots = (v: Float64Array): ResourceSlots => {
      const out: ResourceSlots = {};
      v.forEach((u, i) => { if (u > 0) out[slots[i]] = fromSlotUnits(slots[i], u); });
      return out;
    };

    let batch: Placement[] = [];
    const committed: Placement[] = [];
    // COMMITS_IN_FLIGHT chains, each one commit at a time; a failed commit leaves its sessions PENDING for the next pass.
    const chains = Array.from({ length: COMMITS_IN_FLIGHT }, () => Promise.resolve());
    let placedCount = 0;
    let commits = 0;
    const commit = () => {
      const part = batch;
      batch = [];
      const k = commits++ % COMMITS_IN_FLIGHT;
      chains[k] = chains[k].then(async () => {
        try {
          const done = await supervisor.commitPlacements(part);
          committed.push(...done);
          for (const p of done) this.occupy(occupancy, group, byId.get(p.sessionId)!, p.placements, slots);
        } catch (err) {
          this.reread = true; // the commit may have landed: the next pass reads what is in the table
          this.deps.log.warn({ err: (err as Error).message, sessions: part.length }, 'placements not committed; they stay PENDING');
        }
      });
    };
    let blockedBy: Candidate | undefined;
    const it = sequence(opts.scheduler, candidates, occupied, total);
    let step = it.next();
    while (!step.done) {
      const c = step.value as Candidate;
      if (blockedBy) {
        this.report(c, { info: `waiting for its turn: an earlier session in resource group ${group} cannot be placed yet`, details: { reason: 'queued', blockedBy: blockedBy.sessionId }, blocks: false }, now, false);
        step = it.next(false);
        continue;
      }
      const placements = this.place(c, agents, opts.agent_selector, state);
      if (placements) {
        this.retries.delete(c.sessionId);
        batch.push({ sessionId: c.sessionId, placements });
        if (batch.length >= SCHEDULE_BATCH) commit();
        if (++placedCount % YIELD_EVERY === 0) await new Promise((r) => setImmediate(r));
        step = it.next(true);
        continue;
      }
      const why = this.unplaced(c, group, agents, slots, toSlots);
      const retries = this.report(c, why, now, true, opts.num_retries_to_skip);
      if (why.blocks && (opts.num_retries_to_skip === 0 || retries <= opts.num_retries_to_skip)) blockedBy = c;
      step = it.next(false);
    }
    if (batch.length) commit();
    await Promise.all(chains);
    // The actors go on (PREPARING, the agents) once the whole pass is durable; the next pass
    // need not wait for that (the supervisor keeps these out of its queue meanwhile).
    supervisor.deliverPlacements(committed).catch((err) => this.deps.log.error({ err }, 'placements not delivered to their actors'));
    return committed.length;
  }

  /** Count a committed placement in the kept occupancy: its kernels' slots on their agents and for its keypair. */
  private occupy(occupancy: Occupancy, group: string, c: Candidate, placements: Record<string, string>, slots: string[]): void {
    const owner = at(at(occupancy.byKeypair, group, () => new Map()), c.accessKey, () => new Map<string, number>());
    for (const k of c.kernels) {
      const agent = at(occupancy.byAgent, placements[k.kernelId], () => new Map<string, number>());
      k.need.forEach((units, i) => {
        if (!units) return;
        agent.set(slots[i], (agent.get(slots[i]) ?? 0) + units);
        owner.set(slots[i], (owner.get(slots[i]) ?? 0) + units);
      });
    }
  }

  /** An agent's images as a set, kept while its list is the same array (a pass builds one per agent). */
  private imageSet(images: string[]): ReadonlySet<string> {
    let set = this.imageSets.get(images);
    if (!set) this.imageSets.set(images, set = new Set(images));
    return set;
  }

  /** Kernel id → agent id for every kernel of the session, or undefined (nothing taken). */
  private place(c: Candidate, agents: PlacementAgent[], selector: SchedulerOptions['agent_selector'], state: SelectorState): Record<string, string> | undefined {
    if (!c.multiNode) {
      const a = selectAgent(selector, agents, c.need, c.kernels[0].image, state);
      if (!a) return undefined;
      for (let i = 0; i < c.need.length; i++) a.free[i] -= c.need[i];
      return Object.fromEntries(c.kernels.map((k) => [k.kernelId, a.agentId]));
    }
    const taken: Array<[PlacementAgent, Float64Array]> = [];
    const used = new Set<string>();
    const out: Record<string, string> = {};
    for (const k of c.kernels) {
      const a = selectAgent(selector, agents, k.need, k.image, state, used);
      if (!a) {
        for (const [b, need] of taken) for (let i = 0; i < need.length; i++) b.free[i] += need[i];
        return undefined;
      }
      for (let i = 0; i < k.need.length; i++) a.free[i] -= k.need[i];
      taken.push([a, k.need]);
      used.add(a.agentId);
      out[k.kernelId] = a.agentId;
    }
    return out;
  }

  /** Why a session could not be placed, and whether waiting for resources could change that. */
  private unplaced(c: Candidate, group: string, agents: PlacementAgent[], slots: string[], toSlots: (v: Float64Array) => ResourceSlots): Unplaced {
    const image = c.kernels[0].image;
    // A multi-node session needs each kernel to fit somewhere (they are alike: its largest
    // stands for all); a single-node one needs all of them on one agent.
    const need = c.multiNode ? c.kernels.reduce((m, k) => (k.need.some((v, i) => v > m[i]) ? k.need : m), c.kernels[0].need) : c.need;
    const requested = toSlots(need);
    if (!agents.length) return { info: `no alive agent in resource group ${group}`, details: { reason: 'no-agent', requested }, blocks: false };
    const withImage = agents.filter((a) => a.images.has(image));
    if (!withImage.length) return { info: `no alive agent in resource group ${group} has the image ${image}`, details: { reason: 'no-image', requested }, blocks: false };
    const shortOf = (have: Float64Array) => slots.filter((_n, i) => need[i] > have[i]);
    if (!withImage.some((a) => fits(need, a.capacity))) {
      const short = [...new Set(withImage.flatMap((a) => shortOf(a.capacity)))].sort();
      return { info: `the request exceeds the capacity of every agent in resource group ${group} (${short.join(', ')})`, details: { reason: 'exceeds-capacity', requested, shortSlots: short }, blocks: false };
    }
    // Closest first: fewest slots short, then the smallest shortfall relative to the request.
    const ranked = withImage.map((a) => {
      let gap = 0;
      need.forEach((v, i) => { if (v > a.free[i]) gap += (v - a.free[i]) / v; });
      return { a, short: shortOf(a.free), gap };
    }).sort((x, y) => x.short.length - y.short.length || x.gap - y.gap);
    const shortSlots = [...new Set(ranked.flatMap((r) => r.short))].sort();
    const closestAgents = ranked.slice(0, 3).map((r) => ({ agentId: r.a.agentId, free: toSlots(r.a.free), short: r.short }));
    const best = closestAgents[0];
    const info = `insufficient resources in resource group ${group}: no agent has enough ${shortSlots.join(', ')} free`
      + ` (closest: ${best.agentId}, short of ${best.short.join(', ')})`;
    return { info, details: { reason: 'insufficient-resources', requested, shortSlots, closestAgents }, blocks: true };
  }

  /**
   * Give the session its PENDING reason. Written when the text changes, and while the retries
   * still decide whether it blocks (so the skip survives a manager restart); not on every pass.
   * Returns its retries.
   */
  private report(c: Candidate, why: Unplaced, now: number, tried: boolean, skipAfter = 0): number {
    const prev = (c.ctx.statusData?.scheduler as PendingDetails | undefined)?.retries ?? 0;
    const retries = tried ? (this.retries.get(c.sessionId) ?? prev) + 1 : (this.retries.get(c.sessionId) ?? prev);
    if (tried) this.retries.set(c.sessionId, retries);
    if (c.ctx.statusInfo === why.info && !(tried && retries <= skipAfter + 1)) return retries;
    const scheduler: PendingDetails = { ...why.details, retries, lastTry: new Date(now).toISOString() };
    this.deps.supervisor.send(c.sessionId, { type: 'PENDING_REASON', reason: why.info, data: { scheduler } });
    return retries;
  }

  /** Wake for the earliest pending timeout (the safety pass alone could be late by its interval). */
  private armPendingDeadline(at: number): void {
    clearTimeout(this.deadlineTimer);
    if (!Number.isFinite(at) || this.stopped) return;
    this.deadlineTimer = setTimeout(() => this.request(), Math.max(0, at - Date.now()) + 5);
    this.deadlineTimer.unref();
  }
}
