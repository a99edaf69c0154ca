// The all-in-one mode's stand-in for Redis: the same LivenessStore contract in process memory.
import type { LivenessStore } from './types.ts';

export function openMemoryLiveness(): LivenessStore {
  const expiry = new Map<string, number>();
  const counters = new Map<string, number>();
  const windows = new Map<string, number[]>();
  const handlers = new Map<string, Set<(m: string) => void>>();
  const alive = (key: string) => {
    const at = expiry.get(key);
    if (at === undefined) return false;
    if (at <= Date.now()) { expiry.delete(key); return false; }
    return true;
  };
  return {
    kind: 'memory',
    async setAlive(key, ttlMs) { expiry.set(key, Date.now() + Math.max(1, Math.round(ttlMs))); },
    async isAlive(key) { return alive(key); },
    async listAlive(prefix) { return [...expiry.keys()].filter((k) => k.startsWith(prefix) && alive(k)).sort(); },
    async clear(key) { expiry.delete(key); counters.delete(key); windows.delete(key); },
    async incr(key, by = 1) { const v = (counters.get(key) ?? 0) + by; counters.set(key, v); return v; },
    async getCounter(key) { return counters.get(key) ?? 0; },
    async hitWindow(key, windowMs, n = 1) {
      const now = Date.now();
      const hits = (windows.get(key) ?? []).filter((t) => t > now - windowMs);
      for (let i = 0; i < n; i++) hits.push(now);
      windows.set(key, hits);
      return hits.length;
    },
    async publish(channel, message) {
      // Delivered asynchronously, as Redis does.
      for (const h of handlers.get(channel) ?? []) queueMicrotask(() => h(message));
    },
    async subscribe(channel, onMessage) {
      let set = handlers.get(channel);
      if (!set) handlers.set(channel, (set = new Set()));
      set.add(onMessage);
      return async () => { set!.delete(onMessage); };
    },
    async ping() {},
    async close() { handlers.clear(); },
  };
}
