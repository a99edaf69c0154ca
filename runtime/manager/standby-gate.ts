// What a standby manager does with an agent that dials it. Agents dial the next address when
// their manager goes away. If the leader the election names still answers, the agent is sent
// back to it; if it does not (killed, its lease not lapsed yet), the standby parks the agent's
// registration until it leads, so that a new leader has its cluster's agents the moment it
// wins instead of after each agent's redial and handshake (DESIGN.md §9).
import type { Logger } from '../log.ts';
import type { AgentRegistry } from './agents.ts';

/** How long a probe of the leader's address is trusted, and how long it may take. */
const PROBE_CACHE_MS = 250;
const PROBE_TIMEOUT_MS = 1000;
/** How often a standby with parked agents looks for a live leader to send them to. */
const RELEASE_CHECK_MS = 500;

export class StandbyAgentGate {
  private probe?: { at: number; result: Promise<string | undefined> };
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly deps: {
    /** This manager's own URL (the election's value when it leads). */
    self: () => string;
    /** The URL the election names, if any. */
    leader: () => Promise<string | undefined>;
    /**
     * The longest an agent waits parked: a leader that does not answer this standby yet lives
     * (unreachable from here only, or advertising an address only its own host reaches) would
     * otherwise keep agents here until their registration times out.
     */
    parkLimitMs: () => number;
    log: Logger;
  }) {}

  /** The URL of a live leader other than this manager, or undefined when there is none to send an agent to. */
  liveLeaderElsewhere(): Promise<string | undefined> {
    if (this.probe && Date.now() - this.probe.at < PROBE_CACHE_MS) return this.probe.result;
    const result = this.deps.leader().then(async (url) => {
      if (!url || url === this.deps.self()) return undefined;
      const answered = await fetch(`${url}/`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) }).then((r) => { void r.body?.cancel(); return true; }, () => false);
      return answered ? url : undefined;
    }, () => undefined); // etcd unreachable: nobody can win meanwhile; parked agents are sent on after parkLimitMs
    this.probe = { at: Date.now(), result };
    return result;
  }

  /** While this manager is a standby, send parked agents to a leader that turns out to be alive. */
  start(agents: AgentRegistry, leading: () => boolean): void {
    const tick = async (): Promise<void> => {
      if (!leading() && agents.parkedCount > 0) {
        const url = await this.liveLeaderElsewhere();
        if (url && !leading()) {
          this.deps.log.info({ leader: url, agents: agents.parkedCount }, 'standby: the leader is alive, parked agents sent to it');
          agents.release(url);
        } else if (!leading()) {
          agents.release(undefined, this.deps.parkLimitMs());
        }
      }
      if (this.stopped) return;
      this.timer = setTimeout(() => void tick(), RELEASE_CHECK_MS);
      this.timer.unref();
    };
    void tick();
  }

  stop(): void { this.stopped = true; clearTimeout(this.timer); }
}
