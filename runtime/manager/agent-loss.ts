// What happens to the kernels of an agent that went LOST (no heartbeat for heartbeat.timeout):
// they wait `agent.lost_grace` for it to come back (it re-registers, its containers are
// reconciled, nothing is destroyed blindly); past the grace every live kernel it held is
// reported missing (`agent-lost`) and ends in ERROR, so a session whose main kernel was there
// ends in ERROR and one that lost only sub-kernels goes on RUNNING_DEGRADED. The grace counts
// from when the agent went LOST (its row's status_changed), so a new leader gives what is left of
// it, not a full one; it arms the timers once its sessions are restored, so expiry finds them.
import { isFinalKernelStatus } from '../../schema/status.ts';
import type { LiveClusterConfig } from '../../config/live.ts';
import type { Logger } from '../log.ts';
import type { AgentRegistry } from './agents.ts';
import type { Supervisor } from './supervisor.ts';

export class AgentLossPolicy {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Sessions restored (armRestored): until then, expiry would find no kernels to end. */
  private ready = false;

  constructor(private readonly deps: { agents: AgentRegistry; supervisor: Supervisor; config: LiveClusterConfig; log: Logger }) {
    deps.agents.on('status', (agentId, status) => {
      if (status !== 'LOST') this.disarm(agentId);
      else if (this.ready) this.arm(agentId);
    });
  }

  /** Once the sessions are restored (start or takeover): every LOST agent gets what is left of its grace. */
  armRestored(): void {
    this.ready = true;
    for (const a of this.deps.agents.list()) if (a.status === 'LOST') this.arm(a.agentId);
  }

  close(): void {
    this.ready = false;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  private arm(agentId: string): void {
    if (this.timers.has(agentId)) return;
    const grace = this.deps.config.get('agent.lost_grace');
    const lostFor = Date.now() - (this.deps.agents.statusSince(agentId) ?? Date.now());
    const left = Math.max(0, grace - lostFor);
    this.deps.log.warn({ agentId, graceMs: grace, leftMs: Math.round(left) }, 'agent lost: its kernels wait for it');
    const timer = setTimeout(() => { this.timers.delete(agentId); this.expire(agentId); }, left);
    timer.unref();
    this.timers.set(agentId, timer);
  }

  private disarm(agentId: string): void {
    const t = this.timers.get(agentId);
    if (t) { clearTimeout(t); this.timers.delete(agentId); }
  }

  private expire(agentId: string): void {
    const { supervisor, agents, log } = this.deps;
    if (agents.get(agentId)?.status !== 'LOST') return;
    let ended = 0;
    for (const k of supervisor.kernelsOn(agentId)) {
      if (isFinalKernelStatus(k.status)) continue;
      supervisor.send(k.sessionId, { type: 'KERNEL_MISSING', kernelId: k.kernelId, reason: 'agent-lost' });
      ended++;
    }
    log.error({ agentId, kernels: ended }, 'agent lost past its grace: its kernels end in ERROR');
  }
}
