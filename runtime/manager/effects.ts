// The kernel effects in the world: agent RPCs. Each is idempotent by kernel id (the agent
// finds the container by its name), because restoring an actor re-runs the one in flight.
import type { KernelContext } from '../../actors/kernel.ts';
import type { LiveClusterConfig } from '../../config/live.ts';
import { untilAnswered, type AgentRegistry } from './agents.ts';
import type { KernelEffects } from './supervisor.ts';

// A kernel's image is the full name, resolved from its alias when the session was created.
export function agentKernelEffects(agents: AgentRegistry, config: LiveClusterConfig): KernelEffects {
  const agentOf = (k: KernelContext) => {
    if (!k.agentId) throw new Error(`kernel ${k.kernelId} has no agent`);
    return k.agentId;
  };
  const grace = () => config.get('session.stop_grace');
  const clusterFirstCreate = new Map<string, Promise<unknown>>();
  return {
    async prepare(k) {
      await agents.connected(agentOf(k), config.get('rpc.timeout'));
      if (!agents.get(agentOf(k))?.images.includes(k.image)) throw new Error(`agent ${k.agentId} does not have the image ${k.image}`);
    },
    async create(k) {
      const call = () => untilAnswered(config.get('session.creating_timeout'), (ms) => agents.call(agentOf(k), 'createKernel', {
        kernelId: k.kernelId, sessionId: k.sessionId, owner: k.owner ?? '', image: k.image, role: k.role,
        hostname: k.hostname, slots: k.requestedSlots, environ: k.environ ?? {}, stopGraceSeconds: grace(),
        mounts: (k.mounts ?? []).map((m) => ({ hostPath: m.hostPath, containerPath: m.containerPath, readOnly: m.readOnly })),
        ...(k.cluster ? { cluster: k.cluster } : {}),
      }, ms));
      if (!k.cluster) return call();
      // A cluster's first create makes its network; the others wait for it, then run together.
      const first = clusterFirstCreate.get(k.sessionId);
      if (first) {
        await first.catch(() => undefined);
        return call();
      }
      const mine = call();
      clusterFirstCreate.set(k.sessionId, mine);
      return mine.finally(() => clusterFirstCreate.delete(k.sessionId));
    },
    async restart(k) {
      await untilAnswered(config.get('session.creating_timeout'), (ms) => agents.call(agentOf(k), 'restartKernel', { kernelId: k.kernelId, stopGraceSeconds: grace() }, ms));
    },
    async destroy(k) {
      // Never placed: nothing exists anywhere. A LOST agent that is not connected cannot be
      // reached: the container, if any, is removed as an orphan when the agent dials in and
      // registers again (reconcile.ts).
      const agent = k.agentId ? agents.get(k.agentId) : undefined;
      if (!k.agentId || (agent?.status === 'LOST' && !agent.connected)) return;
      const agentId = k.agentId;
      await untilAnswered(config.get('session.terminating_timeout'), (ms) => agents.call(agentId, 'destroyKernel', {
        kernelId: k.kernelId, forced: k.forced, stopGraceSeconds: grace(), ...(k.cluster ? { sessionId: k.sessionId } : {}),
      }, ms));
    },
  };
}
