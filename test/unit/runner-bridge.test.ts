// The agent's side of the runner protocol without a container: `out` lines read without parsing
// their data (head parsed, body checked, kept as JSON string bytes) must give exactly what
// JSON.parse of the whole line gives, and anything malformed falls back to the whole parse.
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { PassThrough } from 'node:stream';
import { suite } from '../helpers/suite.ts';
import { KernelRunner, isJsonStringBody } from '../../runtime/agent/runner.ts';
import { consoleText } from '../../schema/agent-rpc.ts';
import { resultJson } from '../../runtime/manager/execution.ts';
import { createLogger } from '../../runtime/log.ts';

const t = suite('agent runner bridge');

/** A KernelRunner on in-memory pipes, already past `ready`, with a run started. */
async function bridge() {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const r = new KernelRunner('k1', stdin, stdout, createLogger('test', 'silent'), false);
  stdout.write('{"op":"ready","language":"python","version":"3.11","pid":1}\n');
  await r.start('run1', { mode: 'query', code: '' });
  let seq = 0;
  const line = (s: string | Buffer) => stdout.write(s);
  const out = (stream: string, data: string) => line(`{"op":"out","seq":${++seq},"id":"run1","stream":"${stream}","data":${JSON.stringify(data)}}\n`);
  const finish = () => line(`{"op":"finished","seq":${++seq},"id":"run1","exitCode":0}\n`);
  return { r, line, out, finish, nextSeq: () => ++seq };
}

t('JSON string bodies: what JSON.stringify makes passes, anything JSON.parse refuses does not', () => {
  fc.assert(fc.property(fc.string({ unit: 'binary' }), (s) => {
    const body = Buffer.from(JSON.stringify(s).slice(1, -1));
    assert.ok(isJsonStringBody(body));
  }), { numRuns: 2000 });
  for (const bad of ['a"b', 'a\\', 'a\\x', '\\u12', '\\u12g4', 'tab\there', 'nl\n']) assert.not.ok(isJsonStringBody(Buffer.from(bad)), bad);
  assert.not.ok(isJsonStringBody(Buffer.from([0x61, 0xff, 0x62])), 'invalid UTF-8');
  fc.assert(fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
    let parsed = true;
    try { JSON.parse(`"${Buffer.from(bytes).toString('latin1')}"`); } catch { parsed = false; }
    // Valid UTF-8 that JSON.parse takes passes; whatever JSON.parse refuses is refused.
    if (!parsed) assert.not.ok(isJsonStringBody(bytes));
  }), { numRuns: 5000 });
});

t('output of any text arrives as the same text, coalesced per stream, and as valid JSON in the API reply', async () => {
  await fc.assert(fc.asyncProperty(fc.array(fc.tuple(fc.constantFrom('stdout', 'stderr'), fc.string({ unit: 'binary', maxLength: 50 })), { maxLength: 12 }), async (items) => {
    const b = await bridge();
    for (const [stream, data] of items) b.out(stream, data);
    b.finish();
    const reply = await b.r.collect('run1', 1000);
    assert.is(reply.status, 'finished');
    const expected: Array<[string, string]> = [];
    for (const [stream, data] of items) {
      const last = expected[expected.length - 1];
      if (last && last[0] === stream) last[1] += data; else expected.push([stream, data]);
    }
    assert.equal(consoleText(reply.console), expected);
    assert.equal(JSON.parse(resultJson(reply, true).toString('utf8')), { result: { runId: 'run1', status: 'finished', exitCode: 0, console: expected, options: {}, files: [] } });
  }), { numRuns: 200 });
});

t('lines the fast path does not take are parsed whole: other layouts, invalid UTF-8, split across chunks', async () => {
  const b = await bridge();
  // data not last: parsed whole
  b.line(`{"op":"out","seq":${b.nextSeq()},"data":"first\\n","id":"run1","stream":"stdout"}\n`);
  // spaced out: parsed whole
  b.line(`{ "op": "out", "seq": ${b.nextSeq()}, "id": "run1", "stream": "stdout", "data": "a\\tb" }\n`);
  // a field after data: the body would run into it, so the check refuses it and the whole parse reads data
  b.line(`{"op":"out","seq":${b.nextSeq()},"id":"run1","stream":"stdout","data":"c","x":"d"}\n`);
  // invalid UTF-8 inside the data: U+FFFD, as before
  b.line(Buffer.concat([Buffer.from(`{"op":"out","seq":${b.nextSeq()},"id":"run1","stream":"stderr","data":"x`), Buffer.from([0xff]), Buffer.from('y"}\n')]));
  // escapes of every kind, the line split across three chunks
  const whole = Buffer.from(`{"op":"out","seq":${b.nextSeq()},"id":"run1","stream":"stdout","data":"\\u00e9\\"q\\"\\\\"}\n`);
  b.line(whole.subarray(0, 20));
  b.line(whole.subarray(20, 41));
  b.line(whole.subarray(41));
  b.finish();
  const reply = await b.r.collect('run1', 1000);
  assert.equal(consoleText(reply.console), [['stdout', 'first\na\tbc'], ['stderr', 'x\ufffdy'], ['stdout', 'é"q"\\']]);
  assert.is(reply.exitCode, 0);
});

t.run();
