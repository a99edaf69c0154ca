// One suite for every LivenessStore implementation (Redis, in-process).
import * as assert from 'uvu/assert';
import type { LivenessStore } from '../../../runtime/stores/types.ts';
import { runPrefix } from '../../helpers/services.ts';
import { eventually, suite } from '../../helpers/suite.ts';

export function livenessConformance(name: string, open: () => Promise<LivenessStore>) {
  const t = suite<{ s: LivenessStore; p: string }>(`LivenessStore conformance: ${name}`);
  t.before(async (ctx) => { ctx.s = await open(); ctx.p = runPrefix('liveness'); });
  t.after(async (ctx) => ctx.s.close());

  t('a key is alive until its TTL lapses, and a renewal keeps it', async ({ s, p }) => {
    await s.setAlive(`${p}agent/a`, 300);
    assert.ok(await s.isAlive(`${p}agent/a`));
    await new Promise((r) => setTimeout(r, 200));
    await s.setAlive(`${p}agent/a`, 300);
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(await s.isAlive(`${p}agent/a`), 'renewed key is alive');
    await new Promise((r) => setTimeout(r, 250));
    assert.not.ok(await s.isAlive(`${p}agent/a`), 'lapsed');
  });

  t('listAlive lists live keys under a prefix only', async ({ s, p }) => {
    await s.setAlive(`${p}agents/x`, 5000);
    await s.setAlive(`${p}agents/y`, 5000);
    await s.setAlive(`${p}other/z`, 5000);
    assert.equal(await s.listAlive(`${p}agents/`), [`${p}agents/x`, `${p}agents/y`]);
    await s.clear(`${p}agents/x`);
    assert.equal(await s.listAlive(`${p}agents/`), [`${p}agents/y`]);
  });

  t('renewals of many keys at once all land; a key cleared while its renewal is in flight stays cleared', async ({ s, p }) => {
    const keys = Array.from({ length: 200 }, (_, i) => `${p}many/${String(i).padStart(3, '0')}`);
    await Promise.all(keys.map((k) => s.setAlive(k, 5000)));
    assert.equal(await s.listAlive(`${p}many/`), keys);
    const renewal = s.setAlive(`${p}gone`, 5000);
    await s.clear(`${p}gone`);
    await renewal;
    await new Promise((r) => setTimeout(r, 50));
    assert.not.ok(await s.isAlive(`${p}gone`));
  });

  t('counters add up', async ({ s, p }) => {
    assert.is(await s.getCounter(`${p}c`), 0);
    assert.is(await s.incr(`${p}c`), 1);
    assert.is(await s.incr(`${p}c`, 5), 6);
    assert.is(await s.incr(`${p}c`, -2), 4);
    assert.is(await s.getCounter(`${p}c`), 4);
  });

  t('a rolling window counts only recent hits', async ({ s, p }) => {
    assert.is(await s.hitWindow(`${p}w`, 300), 1);
    assert.is(await s.hitWindow(`${p}w`, 300), 2);
    await new Promise((r) => setTimeout(r, 350));
    assert.is(await s.hitWindow(`${p}w`, 300), 1);
    assert.is(await s.hitWindow(`${p}w`, 300, 5), 6, 'several hits at once');
  });

  t('publish reaches subscribers until they unsubscribe', async ({ s, p }) => {
    const got: string[] = [];
    const unsub = await s.subscribe(`${p}ch`, (m) => got.push(m));
    await s.publish(`${p}ch`, 'one');
    await s.publish(`${p}ch`, 'two');
    await eventually(() => got.length === 2, 3000, 'two messages');
    assert.equal(got, ['one', 'two']);
    await unsub();
    await s.publish(`${p}ch`, 'three');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(got, ['one', 'two']);
  });

  t('ping answers', async ({ s }) => { await s.ping(); });

  t.run();
}
