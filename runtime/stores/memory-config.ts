// The all-in-one mode's stand-in for etcd: the same ConfigStore contract in process memory.
// One process is the whole cluster there, so an election is a queue of candidates.
import type { ConfigStore, Leadership } from './types.ts';

export function openMemoryConfig(): ConfigStore {
  const data = new Map<string, string>();
  const watchers = new Set<{ prefix: string; cb: (k: string, v: string | undefined) => void }>();
  const elections = new Map<string, Array<{ candidate: string; elect: () => void }>>();
  const notify = (key: string, value: string | undefined) => {
    for (const w of watchers) if (key.startsWith(w.prefix)) queueMicrotask(() => w.cb(key, value));
  };
  return {
    kind: 'memory',
    async get(key) { return data.get(key); },
    async getPrefix(prefix) {
      return Object.fromEntries([...data].filter(([k]) => k.startsWith(prefix)).sort(([a], [b]) => a.localeCompare(b)));
    },
    async put(key, value) { data.set(key, value); notify(key, value); },
    async delete(key) { if (data.delete(key)) notify(key, undefined); },
    async watchPrefix(prefix, cb) {
      const w = { prefix, cb };
      watchers.add(w);
      return async () => { watchers.delete(w); };
    },
    campaign(name, candidate): Leadership {
      const queue = elections.get(name) ?? [];
      elections.set(name, queue);
      let isLeader = false;
      let elect!: () => void;
      const elected = new Promise<void>((resolve) => { elect = () => { isLeader = true; resolve(); }; });
      const entry = { candidate, elect };
      queue.push(entry);
      if (queue[0] === entry) elect();
      return {
        elected,
        get isLeader() { return isLeader; },
        onLost() { /* a lease in process memory never lapses */ },
        async resign() {
          const wasHead = queue[0] === entry;
          queue.splice(queue.indexOf(entry), 1);
          isLeader = false;
          if (wasHead) queue[0]?.elect();
        },
      };
    },
    async leader(name) { return elections.get(name)?.[0]?.candidate; },
    async ping() {},
    async close() { watchers.clear(); },
  };
}
