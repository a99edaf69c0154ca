// The cluster config as a process sees it: defaults overlaid with what etcd holds, kept current
// by a watch. A bad value in etcd is reported and the last good one (or the default) is kept.
import { CLUSTER_CONFIG_PREFIX, defaultClusterConfig, isClusterKey, parseClusterValue, type ClusterConfig, type ClusterKey } from './cluster.ts';
import type { ConfigStore } from '../runtime/stores/types.ts';

export interface LiveClusterConfig {
  get<K extends ClusterKey>(key: K): ClusterConfig[K];
  all(): ClusterConfig;
  onChange(cb: (key: ClusterKey) => void): void;
  close(): Promise<void>;
}

export async function openClusterConfig(store: ConfigStore, onBadValue?: (key: string, err: Error) => void): Promise<LiveClusterConfig> {
  const values = defaultClusterConfig() as Record<string, unknown>;
  const listeners: Array<(k: ClusterKey) => void> = [];
  const apply = (fullKey: string, raw: string | undefined) => {
    const k = fullKey.slice(CLUSTER_CONFIG_PREFIX.length);
    if (!isClusterKey(k)) return;
    try {
      values[k] = raw === undefined ? (defaultClusterConfig() as Record<string, unknown>)[k] : parseClusterValue(k, raw);
      for (const l of listeners) l(k);
    } catch (e) { onBadValue?.(k, e as Error); }
  };
  for (const [k, v] of Object.entries(await store.getPrefix(CLUSTER_CONFIG_PREFIX))) apply(k, v);
  const stop = await store.watchPrefix(CLUSTER_CONFIG_PREFIX, apply);
  return {
    get: (key) => values[key] as never,
    all: () => ({ ...values }) as ClusterConfig,
    onChange: (cb) => { listeners.push(cb); },
    close: stop,
  };
}
