// One suite for every ConfigStore implementation (etcd, in-process).
import * as assert from 'uvu/assert';
import type { ConfigStore } from '../../../runtime/stores/types.ts';
import { runPrefix } from '../../helpers/services.ts';
import { eventually, suite } from '../../helpers/suite.ts';

export function configConformance(name: string, open: () => Promise<ConfigStore>) {
  const t = suite<{ s: ConfigStore; p: string }>(`ConfigStore conformance: ${name}`);
  t.before(async (ctx) => { ctx.s = await open(); ctx.p = runPrefix('config'); });
  t.after(async (ctx) => ctx.s.close());

  t('put, get, getPrefix and delete', async ({ s, p }) => {
    assert.is(await s.get(`${p}missing`), undefined);
    await s.put(`${p}a`, '1');
    await s.put(`${p}b`, 'two');
    await s.put(`${p}sub/c`, '{"x":3}');
    assert.is(await s.get(`${p}b`), 'two');
    assert.equal(await s.getPrefix(p), { [`${p}a`]: '1', [`${p}b`]: 'two', [`${p}sub/c`]: '{"x":3}' });
    await s.delete(`${p}a`);
    assert.is(await s.get(`${p}a`), undefined);
  });

  t('watchPrefix sees puts and deletes under its prefix only', async ({ s, p }) => {
    const seen: Array<[string, string | undefined]> = [];
    const stop = await s.watchPrefix(`${p}w/`, (k, v) => seen.push([k, v]));
    await s.put(`${p}w/x`, '1');
    await s.put(`${p}elsewhere`, '2');
    await s.delete(`${p}w/x`);
    await eventually(() => seen.length >= 2, 5000, 'two watch events');
    assert.equal(seen, [[`${p}w/x`, '1'], [`${p}w/x`, undefined]]);
    await stop();
  });

  t('an election has one leader; the next candidate takes over when it resigns', async ({ s, p }) => {
    const name = `${p}election`;
    const a = s.campaign(name, 'manager-a', 2);
    await a.elected;
    assert.ok(a.isLeader);
    const b = s.campaign(name, 'manager-b', 2);
    await new Promise((r) => setTimeout(r, 300));
    assert.not.ok(b.isLeader, 'b waits while a leads');
    assert.is(await s.leader(name), 'manager-a');
    await a.resign();
    await b.elected;
    assert.ok(b.isLeader);
    assert.is(await s.leader(name), 'manager-b');
    await b.resign();
  });

  t('ping answers', async ({ s }) => { await s.ping(); });

  t.run();
}
