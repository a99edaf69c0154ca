// Sequencers (Backend.AI's schedulers): the order in which a resource group's PENDING sessions
// are offered to placement. `fifo` oldest first, `lifo` newest first, `drf` dominant-resource
// fairness: the session offered next is the oldest of the keypair whose dominant share (its
// largest fraction of any slot of the group's capacity) is the smallest, recomputed after
// every placement, so keypairs with different demands converge to equal dominant shares.

export type SequencerName = 'fifo' | 'lifo' | 'drf';

export interface QueuedSession {
  sessionId: string;
  accessKey: string;
  /** Enqueue time (ms since the epoch); ties keep the session ids' order. */
  createdAt: number;
  /** All its kernels together, in slot units. */
  need: Float64Array;
}

const byAge = (a: QueuedSession, b: QueuedSession) => a.createdAt - b.createdAt || (a.sessionId < b.sessionId ? -1 : 1);

/**
 * Offer the sessions one by one; the caller answers each with whether it was placed
 * (`it.next(true)`). `occupied` is each keypair's current use in the group; `total` the group's
 * capacity (both in the same slot vectors).
 */
export function* sequence(
  name: SequencerName, queued: QueuedSession[], occupied: Map<string, Float64Array>, total: Float64Array,
): Generator<QueuedSession, void, boolean | undefined> {
  if (name !== 'drf') {
    const ordered = queued.slice().sort(byAge);
    if (name === 'lifo') ordered.reverse();
    for (const s of ordered) yield s;
    return;
  }
  const queues = new Map<string, QueuedSession[]>();
  for (const s of queued.slice().sort(byAge)) {
    const q = queues.get(s.accessKey);
    if (q) q.push(s); else queues.set(s.accessKey, [s]);
  }
  const heads = new Map<string, number>([...queues.keys()].map((k) => [k, 0]));
  const share = (key: string) => dominantShare(occupied.get(key), total);
  for (;;) {
    let pick: string | undefined;
    let pickShare = Infinity;
    for (const [key, i] of heads) {
      const s = share(key);
      if (s < pickShare || (s === pickShare && pick !== undefined && byAge(queues.get(key)![i], queues.get(pick)![heads.get(pick)!]) < 0)) {
        pick = key; pickShare = s;
      }
    }
    if (pick === undefined) return;
    const i = heads.get(pick)!;
    const s = queues.get(pick)![i];
    if (i + 1 < queues.get(pick)!.length) heads.set(pick, i + 1); else heads.delete(pick);
    const placed = yield s;
    if (placed) {
      const used = occupied.get(pick) ?? new Float64Array(total.length);
      for (let k = 0; k < used.length; k++) used[k] += s.need[k];
      occupied.set(pick, used);
    }
  }
}

export function dominantShare(used: Float64Array | undefined, total: Float64Array): number {
  if (!used) return 0;
  let max = 0;
  for (let k = 0; k < total.length; k++) if (total[k] > 0) max = Math.max(max, used[k] / total[k]);
  return max;
}
