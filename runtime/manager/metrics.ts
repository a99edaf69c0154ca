// Prometheus metrics of one manager, served as text at GET /metrics (API.md). Unsigned: a
// Prometheus scraper cannot sign Backend.AI requests, and nothing here names a user, a session
// or a key, only counts. Each manager answers for itself (a standby too, with leader 0 and no
// sessions): scrape every manager.
//
// Gauges are read from the supervisor and the agent registry when scraped (no bookkeeping on
// the hot path); counters are bumped where the thing happens: one per HTTP answer, one per
// committed lifecycle event.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { AGENT_STATUSES, SESSION_STATUSES } from '../../schema/status.ts';
import type { AgentView } from './agents.ts';

export interface MetricsSources {
  isLeader(): boolean;
  /** Live sessions hosted here, by status. */
  sessionStatusCounts(): Record<string, number>;
  agents(): AgentView[];
}

export class ManagerMetrics {
  readonly registry = new Registry();
  readonly #requests: Counter<'method' | 'route' | 'status'>;
  readonly #duration: Histogram<'method' | 'route'>;
  readonly #events: Counter<'event'>;

  constructor(src: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'flotilla_manager_' });
    new Gauge({
      name: 'flotilla_manager_leader', help: '1 while this manager leads (hosts the actors and schedules), else 0', registers,
      collect() { this.set(src.isLeader() ? 1 : 0); },
    });
    new Gauge({
      name: 'flotilla_sessions', help: 'live sessions this manager supervises, by status', labelNames: ['status'] as const, registers,
      collect() {
        const counts = src.sessionStatusCounts();
        for (const status of SESSION_STATUSES) this.set({ status }, counts[status] ?? 0);
      },
    });
    new Gauge({
      name: 'flotilla_agents', help: 'agents this manager knows, by status', labelNames: ['status'] as const, registers,
      collect() {
        const counts: Record<string, number> = {};
        for (const a of src.agents()) counts[a.status] = (counts[a.status] ?? 0) + 1;
        for (const status of AGENT_STATUSES) this.set({ status }, counts[status] ?? 0);
      },
    });
    const slotSums = (pick: (a: AgentView) => Record<string, string>) => {
      const sums: Record<string, number> = {};
      for (const a of src.agents()) {
        if (a.status !== 'ALIVE') continue;
        for (const [slot, amount] of Object.entries(pick(a))) sums[slot] = (sums[slot] ?? 0) + Number(amount);
      }
      return sums;
    };
    new Gauge({
      name: 'flotilla_agent_slots_capacity', help: 'resource slots ALIVE agents declare, summed (cpu in cores, mem in bytes)', labelNames: ['slot'] as const, registers,
      collect() { this.reset(); for (const [slot, v] of Object.entries(slotSums((a) => a.availableSlots))) this.set({ slot }, v); },
    });
    new Gauge({
      name: 'flotilla_agent_slots_occupied', help: 'resource slots occupied on ALIVE agents as they last reported, summed', labelNames: ['slot'] as const, registers,
      collect() { this.reset(); for (const [slot, v] of Object.entries(slotSums((a) => a.occupiedSlots))) this.set({ slot }, v); },
    });
    this.#events = new Counter({
      name: 'flotilla_lifecycle_events_total', help: 'session and kernel lifecycle events committed by this manager, by Backend.AI event name', labelNames: ['event'] as const, registers,
    });
    this.#requests = new Counter({
      name: 'flotilla_http_requests_total', help: 'HTTP requests answered, by method, route pattern and status', labelNames: ['method', 'route', 'status'] as const, registers,
    });
    this.#duration = new Histogram({
      name: 'flotilla_http_request_duration_seconds', help: 'time from the request to its answer, by method and route pattern', labelNames: ['method', 'route'] as const, registers,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    });
  }

  get contentType(): string { return this.registry.contentType; }

  text(): Promise<string> { return this.registry.metrics(); }

  /** `route` is the route's pattern (`/session/:ref`), never the raw path: bounded labels. */
  countRequest(method: string, route: string, status: number, seconds: number): void {
    this.#requests.inc({ method, route, status: String(status) });
    this.#duration.observe({ method, route }, seconds);
  }

  countEvents(events: ReadonlyArray<{ name: string }>): void {
    // One increment per name per commit (a commit carries hundreds of events under load).
    const counts = new Map<string, number>();
    for (const e of events) counts.set(e.name, (counts.get(e.name) ?? 0) + 1);
    for (const [event, n] of counts) this.#events.inc({ event }, n);
  }
}
