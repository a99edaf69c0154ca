// The manager's node flags (runtime/manager/node-flags.ts) reach every launcher of a manager:
// V8 reads them only at process start, so a launcher that drops one runs a slower manager silently.
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { MANAGER_NODE_FLAGS, missingManagerFlags, nodeFlagsFor } from '../../runtime/manager/node-flags.ts';
import { suite } from '../helpers/suite.ts';

const test = suite('manager node flags', { timeoutMs: 30_000 });
const file = (rel: string) => new URL(`../../${rel}`, import.meta.url).pathname;

test('bin/flotilla.js run as an executable starts node with the manager flags (its shebang), and runs', async () => {
  const shebang = readFileSync(file('bin/flotilla.js'), 'utf8').split('\n')[0];
  assert.ok(shebang.startsWith('#!/usr/bin/env -S node '), shebang);
  assert.equal(missingManagerFlags(shebang.split(' ').slice(3)), []);
  const out = await new Promise<string>((resolve, reject) =>
    execFile(file('bin/flotilla.js'), ['--help'], (err, stdout) => (err ? reject(err) : resolve(stdout))));
  assert.match(out, /Usage: flotilla/);
});

test('scripts/up starts the all-in-one manager with the manager flags', () => {
  const exec = readFileSync(file('scripts/up'), 'utf8').split('\n').find((l) => l.startsWith('exec node '));
  assert.ok(exec, 'scripts/up ends in `exec node … bin/flotilla.js up`');
  assert.equal(missingManagerFlags(exec!.split(' ')), []);
  assert.match(exec!, /bin\/flotilla\.js up/);
});

test('the flags are asked of `manager` and `up` only, and missing ones are named', () => {
  assert.equal(nodeFlagsFor('manager'), MANAGER_NODE_FLAGS);
  assert.equal(nodeFlagsFor('up'), MANAGER_NODE_FLAGS);
  assert.equal(nodeFlagsFor('agent'), []);
  assert.equal(missingManagerFlags(['--import', 'tsx']), [...MANAGER_NODE_FLAGS]);
  assert.equal(missingManagerFlags(['--expose-gc', ...MANAGER_NODE_FLAGS]), []);
});

test.run();
