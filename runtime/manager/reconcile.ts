// What an agent reports on (re)registration against what the record says (DESIGN.md §2 rule 3):
// a kernel whose container exited or vanished gets the matching event; a container no live
// kernel owns is removed as an orphan.
import { isFinalKernelStatus } from '../../schema/status.ts';
import type { ContainerReport } from '../../schema/agent-rpc.ts';
import type { Logger } from '../log.ts';
import type { AgentRegistry } from './agents.ts';
import type { Supervisor } from './supervisor.ts';

export async function reconcileAgent(d: { agentId: string; containers: ContainerReport[]; supervisor: Supervisor; agents: AgentRegistry; log: Logger }): Promise<void> {
  const log = d.log.child({ agentId: d.agentId });
  const reported = new Map(d.containers.map((c) => [c.kernelId, c]));
  const live = new Map(d.supervisor.kernelsOn(d.agentId).map((k) => [k.kernelId, k]));
  for (const [kernelId, k] of live) {
    if (k.status !== 'RUNNING') continue; // creating/destroying effects re-run idempotently and settle it
    const c = reported.get(kernelId);
    if (!c) {
      log.warn({ kernelId, sessionId: k.sessionId }, 'container vanished');
      d.supervisor.send(k.sessionId, { type: 'KERNEL_MISSING', kernelId, reason: 'container-vanished' });
    } else if (!c.running) {
      log.warn({ kernelId, sessionId: k.sessionId, exitCode: c.exitCode }, 'container exited while unobserved');
      d.supervisor.send(k.sessionId, { type: 'KERNEL_EXITED', kernelId, exitCode: c.exitCode ?? -1 });
    }
  }
  for (const c of d.containers) {
    const k = live.get(c.kernelId);
    if (k && !isFinalKernelStatus(k.status)) continue;
    log.warn({ kernelId: c.kernelId, sessionId: c.sessionId }, 'removing orphan container');
    await d.agents.call(d.agentId, 'destroyKernel', { kernelId: c.kernelId, forced: true }).catch((err) => log.warn({ kernelId: c.kernelId, err: (err as Error).message }, 'orphan removal failed'));
  }
}
