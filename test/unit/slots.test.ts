// Resource slots: exact decimal arithmetic and the units clients send.
import * as assert from 'uvu/assert';
import { addSlots, fitsIn, parseSlots, shortSlots, subtractSlots } from '../../schema/slots.ts';
import { suite } from '../helpers/suite.ts';

const t = suite('resource slots');

t('parses cpu decimals and mem sizes the way Backend.AI clients send them', () => {
  assert.equal(parseSlots({ cpu: 0.5, mem: '2g' }), { cpu: '0.5', mem: String(2 * 1024 ** 3) });
  assert.equal(parseSlots('cpu=4,mem=512m,cuda.device=1'), { cpu: '4', mem: String(512 * 1024 ** 2), 'cuda.device': '1' });
  assert.equal(parseSlots({ mem: 1073741824 }), { mem: '1073741824' });
  assert.equal(parseSlots({ mem: '1.5g' }), { mem: String(1.5 * 1024 ** 3) });
  for (const bad of [{ cpu: -1 }, { cpu: 'two' }, { mem: 'lots' }, { 'Bad Name': 1 }, { cpu: 1e400 }]) {
    assert.throws(() => parseSlots(bad as Record<string, unknown>));
  }
});

t('adding and subtracting never drifts (0.1 added ten times is exactly 1)', () => {
  let total = {};
  for (let i = 0; i < 10; i++) total = addSlots(total, { cpu: '0.1' });
  assert.equal(total, { cpu: '1' });
  assert.equal(subtractSlots({ cpu: '1' }, { cpu: '0.3' }), { cpu: '0.7' });
  assert.equal(subtractSlots({ cpu: '1' }, { cpu: '3' }), { cpu: '0' });
});

t('a request fits only when every slot fits; missing accelerator slots do not', () => {
  assert.ok(fitsIn({ cpu: '2', mem: '100' }, { cpu: '2', mem: '100' }));
  assert.not.ok(fitsIn({ cpu: '2.000001' }, { cpu: '2' }));
  assert.not.ok(fitsIn({ 'cuda.device': '1' }, { cpu: '8' }));
  assert.ok(fitsIn({ 'cuda.device': '0' }, { cpu: '8' }));
  assert.equal(shortSlots({ cpu: '4', mem: '1', 'cuda.device': '1' }, { cpu: '2', mem: '8' }), ['cpu', 'cuda.device']);
});

t.run();
