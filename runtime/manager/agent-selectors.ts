// Agent selectors (Backend.AI's): which of the agents a kernel fits on it is placed on.
// `dispersed` spreads load (the agent left with the most free capacity), `concentrated` packs
// (the least, keeping whole agents free for big sessions), `roundrobin` takes the next agent
// after the last one it chose. Capacities are vectors of integer slot units (slotUnits), one
// entry per slot name of the pass, so a fit check is a loop over numbers.

export type AgentSelectorName = 'dispersed' | 'concentrated' | 'roundrobin';

export interface PlacementAgent {
  agentId: string;
  images: ReadonlySet<string>;
  capacity: Float64Array;
  /** Free capacity, lowered as the pass places kernels. */
  free: Float64Array;
}

export function fits(need: Float64Array, free: Float64Array): boolean {
  for (let i = 0; i < need.length; i++) if (need[i] > free[i]) return false;
  return true;
}

/** How free an agent would be after taking `need`: the mean free fraction of the slots the request names. */
function headroom(a: PlacementAgent, need: Float64Array): number {
  let sum = 0;
  let n = 0;
  for (let i = 0; i < need.length; i++) {
    if (need[i] === 0 || a.capacity[i] === 0) continue;
    sum += (a.free[i] - need[i]) / a.capacity[i];
    n++;
  }
  return n ? sum / n : 0;
}

/** Roundrobin's position per resource group, kept across passes. */
export type SelectorState = { cursor: number };

/**
 * Choose an agent for `need` among `agents` (sorted by id, so ties resolve the same way
 * everywhere). Agents in `avoid` are used only when no other fits (multi-node sessions spread
 * their kernels first).
 */
export function selectAgent(
  name: AgentSelectorName, agents: readonly PlacementAgent[], need: Float64Array, image: string, state: SelectorState,
  avoid?: ReadonlySet<string>,
): PlacementAgent | undefined {
  const usable = (a: PlacementAgent, strict: boolean) => a.images.has(image) && fits(need, a.free) && !(strict && avoid?.has(a.agentId));
  for (const strict of avoid?.size ? [true, false] : [false]) {
    if (name === 'roundrobin') {
      const n = agents.length;
      for (let step = 0; step < n; step++) {
        const i = (state.cursor + step) % n;
        if (usable(agents[i], strict)) { state.cursor = i + 1; return agents[i]; }
      }
      continue;
    }
    let best: PlacementAgent | undefined;
    let bestScore = 0;
    for (const a of agents) {
      if (!usable(a, strict)) continue;
      const score = headroom(a, need);
      if (!best || (name === 'dispersed' ? score > bestScore : score < bestScore)) { best = a; bestScore = score; }
    }
    if (best) return best;
  }
  return undefined;
}
