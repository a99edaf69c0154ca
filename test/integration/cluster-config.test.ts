// The cluster config as processes see it, over etcd and over the all-in-one stand-in: defaults
// until set, changes seen live, a bad value reported and the last good one kept.
import * as assert from 'uvu/assert';
import { CLUSTER_CONFIG_PREFIX } from '../../config/cluster.ts';
import { openClusterConfig } from '../../config/live.ts';
import { openEtcd } from '../../runtime/stores/etcd.ts';
import { openMemoryConfig } from '../../runtime/stores/memory-config.ts';
import type { ConfigStore } from '../../runtime/stores/types.ts';
import { realServices, runPrefix } from '../helpers/services.ts';
import { eventually, suite } from '../helpers/suite.ts';

for (const [name, open] of [
  ['etcd', () => openEtcd({ endpoints: realServices.etcdEndpoints, namespace: runPrefix('live-config') })],
  ['in-process', () => openMemoryConfig()],
] as Array<[string, () => ConfigStore]>) {
  const t = suite<{ store: ConfigStore }>(`live cluster config over ${name}`);
  t.before((ctx) => { ctx.store = open(); });
  t.after(async (ctx) => { await ctx.store.close(); });

  t('defaults until set, then a change is seen live without a restart', async ({ store }) => {
    await store.put(`${CLUSTER_CONFIG_PREFIX}heartbeat.interval`, '500');
    const bad: string[] = [];
    const live = await openClusterConfig(store, (k) => bad.push(k));
    const changed: string[] = [];
    live.onChange((k) => changed.push(k));
    assert.is(live.get('heartbeat.interval'), 500);
    assert.is(live.get('heartbeat.timeout'), 3000);
    await store.put(`${CLUSTER_CONFIG_PREFIX}heartbeat.timeout`, '4500');
    await eventually(() => live.get('heartbeat.timeout') === 4500, 5000, 'timeout updated live');
    assert.equal(changed, ['heartbeat.timeout']);
    await store.put(`${CLUSTER_CONFIG_PREFIX}heartbeat.timeout`, 'soon');
    await eventually(() => bad.length === 1, 5000, 'bad value reported');
    assert.equal(bad, ['heartbeat.timeout']);
    assert.is(live.get('heartbeat.timeout'), 4500, 'the last good value is kept');
    await store.delete(`${CLUSTER_CONFIG_PREFIX}heartbeat.interval`);
    await eventually(() => live.get('heartbeat.interval') === 1000, 5000, 'deleted key back to its default');
    await live.close();
  });

  t.run();
}
