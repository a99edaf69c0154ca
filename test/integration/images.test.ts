// Kernel images against the real Docker engine: the build (labels, tags, idempotence), the python
// root filesystem, and both kernel runners over an attached stdin/stdout the way the agent uses
// them (DESIGN.md §8): ready line, ping, bad input, detach and re-attach, EOF, SIGTERM.
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import Docker from 'dockerode';
import { buildImages, IMAGE_HASH_LABEL, KERNEL_IMAGES, KERNELSPEC_LABEL, resolveImage, type ImageSpec } from '../../images/build.ts';
import { suite } from '../helpers/suite.ts';

type BuildResult = Awaited<ReturnType<typeof buildImages>>;
interface Ctx { docker: Docker; first: BuildResult }
const t = suite<Ctx>('kernel images', { timeoutMs: 120_000 });
const RUN = randomBytes(4).toString('hex');
const progress = (line: string) => console.log(`    ${line}`);

t.before(async (ctx) => {
  ctx.docker = new Docker();
  await ctx.docker.ping(); // no Docker is a failure here, never a skip
  ctx.first = await buildImages({ docker: ctx.docker, onProgress: progress });
});

t.after(async (ctx) => {
  const leftovers = await ctx.docker.listContainers({ all: true, filters: JSON.stringify({ label: [`flotilla-test-images=${RUN}`] }) });
  await Promise.all(leftovers.map((c) => ctx.docker.getContainer(c.Id).remove({ force: true }).catch(() => {})));
});

/** Creates a container of this run (labelled so `after` can sweep it), removed by the caller's finally. */
function create(ctx: Ctx, opts: Docker.ContainerCreateOptions): Promise<Docker.Container> {
  return ctx.docker.createContainer({ ...opts, Labels: { 'flotilla-test-images': RUN } });
}

/** Splits Docker's multiplexed (Tty: false) log format into stdout and stderr. */
function demux(buf: Buffer): { stdout: string; stderr: string } {
  const out = { stdout: '', stderr: '' };
  for (let i = 0; i + 8 <= buf.length; ) {
    const size = buf.readUInt32BE(i + 4);
    const chunk = buf.subarray(i + 8, i + 8 + size).toString('utf8');
    if (buf[i] === 2) out.stderr += chunk;
    else out.stdout += chunk;
    i += 8 + size;
  }
  return out;
}

/** One attach to a runner, as the agent does it: hijacked stdin, demultiplexed stdout, JSON lines. */
async function attach(container: Docker.Container) {
  const stream = (await container.attach({ stream: true, hijack: true, stdin: true, stdout: true, stderr: true, logs: false })) as NodeJS.ReadWriteStream & { destroy(): void };
  const stdout = new PassThrough();
  let stderr = '';
  const stderrStream = new PassThrough().on('data', (d: Buffer) => { stderr += d.toString(); });
  container.modem.demuxStream(stream, stdout, stderrStream);
  const lines: string[] = [];
  let wake: (() => void) | undefined;
  let partial = '';
  stdout.on('data', (d: Buffer) => {
    partial += d.toString();
    const parts = partial.split('\n');
    partial = parts.pop()!;
    lines.push(...parts);
    wake?.();
  });
  let ended = false;
  stream.on('end', () => { ended = true; wake?.(); });
  return {
    get ended() { return ended; },
    send(line: string | object) { stream.write(`${typeof line === 'string' ? line : JSON.stringify(line)}\n`); },
    /** The next line from the runner as JSON; fails on timeout, with whatever it wrote to stderr. */
    async next(ms = 5000): Promise<Record<string, unknown>> {
      const deadline = Date.now() + ms;
      while (!lines.length) {
        if (Date.now() > deadline) throw new Error(`no line from the runner within ${ms} ms${stderr ? `; stderr: ${stderr}` : ''}`);
        await new Promise<void>((r) => { wake = r; setTimeout(r, 100); });
      }
      return JSON.parse(lines.shift()!) as Record<string, unknown>;
    },
    end() { stream.end(); },
    destroy() { stream.destroy(); },
  };
}

const runnerContainer = (ctx: Ctx, spec: ImageSpec, stdinOnce = false) =>
  create(ctx, { Image: `${spec.name}:latest`, OpenStdin: true, StdinOnce: stdinOnce, AttachStdin: true, AttachStdout: true, AttachStderr: true, Tty: false });

async function eventuallyStopped(c: Docker.Container, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await c.inspect()).State.Running) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

t('builds both images with their tags and kernelspec labels', async (ctx) => {
  assert.equal(ctx.first.map((r) => r.name), KERNEL_IMAGES.map((s) => `${s.name}:${s.tag}`));
  for (const [i, spec] of KERNEL_IMAGES.entries()) {
    const full = await ctx.docker.getImage(`${spec.name}:${spec.tag}`).inspect();
    const latest = await ctx.docker.getImage(`${spec.name}:latest`).inspect();
    assert.is(full.Id, ctx.first[i].id);
    assert.is(latest.Id, full.Id);
    assert.equal(JSON.parse(full.Config.Labels[KERNELSPEC_LABEL]), spec.kernelspec);
    assert.match(full.Config.Labels[IMAGE_HASH_LABEL], /^[0-9a-f]{64}$/);
    assert.is(full.Config.WorkingDir, '/home/work');
    assert.ok(full.Config.Env.includes('LANG=C.UTF-8'));
    assert.ok(ctx.first[i].bytes > 0);
    for (const ref of [...spec.aliases, spec.name, `${spec.name}:${spec.tag}`, `${spec.name}:latest`]) assert.is(resolveImage(ref), spec, ref);
  }
  assert.is(resolveImage('ubuntu'), undefined);
  const [python, shell] = ctx.first;
  assert.ok(python.bytes < 100e6, `python image is ${python.bytes} bytes`);
  assert.ok(shell.bytes < 5e6, `shell image is ${shell.bytes} bytes`);
});

t('a second build is skipped, a forced one is not', async (ctx) => {
  const started = Date.now();
  const again = await buildImages({ docker: ctx.docker, onProgress: progress });
  const took = Date.now() - started;
  assert.equal(again.map((r) => r.built), [false, false]);
  assert.equal(again.map((r) => r.id), ctx.first.map((r) => r.id));
  assert.ok(took < 10_000, `skipped build took ${took} ms`);

  const forced = await buildImages({ docker: ctx.docker, names: ['shell'], force: true, onProgress: progress });
  assert.is(forced.length, 1);
  assert.ok(forced[0].built);
  assert.is((await ctx.docker.getImage('flotilla/shell:latest').inspect()).Id, forced[0].id);
  assert.equal((await buildImages({ docker: ctx.docker, names: ['shell'] })).map((r) => r.built), [false]);
});

t('python image: ssl, sqlite3, ctypes, json and socket import, as the work user', async (ctx) => {
  const c = await create(ctx, {
    Image: 'flotilla/python:3.11',
    Cmd: ['python3', '-c', "import ssl, sqlite3, ctypes, json, socket, os; ssl.create_default_context(); print('ok', os.getuid(), os.getcwd())"],
  });
  try {
    await c.start();
    const { StatusCode } = await c.wait();
    const logs = demux((await c.logs({ stdout: true, stderr: true, follow: false })) as unknown as Buffer);
    assert.is(StatusCode, 0, logs.stderr);
    assert.is(logs.stdout.trim(), 'ok 1000 /home/work', logs.stderr);
  } finally {
    await c.remove({ force: true });
  }
});

for (const spec of KERNEL_IMAGES) {
  const language = spec.kernelspec.language;

  t(`${language} runner: ready, ping, bad input, re-attach, SIGTERM`, async (ctx) => {
    const c = await runnerContainer(ctx, spec);
    try {
      // Attach before start so the ready line is not missed.
      const first = await attach(c);
      await c.start();
      const ready = await first.next();
      assert.is(ready.op, 'ready');
      assert.is(ready.language, language);
      // PID 1 is the runner's small init in the python image; ready names the runner itself.
      assert.ok(typeof ready.pid === "number" && Number.isInteger(ready.pid) && ready.pid >= 1, `pid ${String(ready.pid)}`);
      assert.ok(String(ready.version).startsWith(spec.tag), `version ${ready.version}`);

      first.send({ op: 'ping', id: 1 });
      assert.equal(await first.next(), { op: 'pong', id: 1 });
      for (const bad of ['this is not json', '[1, 2]', '{"op": "ping", "id": 4']) {
        first.send(bad);
        const reply = await first.next();
        assert.is(reply.op, 'error', bad);
        assert.is(reply.id, null, bad);
      }
      first.send({ op: 'launch-missiles', id: 7 });
      const unknown = await first.next();
      assert.is(unknown.op, 'error');
      assert.is(unknown.id, 7);
      assert.match(String(unknown.msg), /launch-missiles/);
      first.send({ op: 'ping', id: 'after-errors' });
      assert.equal(await first.next(), { op: 'pong', id: 'after-errors' });

      // Detaching half-closes the attach: Docker ends the session but keeps the runner's stdin open.
      first.end();
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(first.ended, 'Docker ends the attach once its stdin is closed');
      first.destroy();
      assert.ok((await c.inspect()).State.Running, 'runner survives the detach');

      const second = await attach(c);
      second.send({ op: 'ping', id: 2 });
      assert.equal(await second.next(), { op: 'pong', id: 2 });
      second.destroy();

      const third = await attach(c);
      third.send({ op: 'ping', id: 3 });
      assert.equal(await third.next(), { op: 'pong', id: 3 });
      third.destroy();

      const started = Date.now();
      await c.stop({ t: 2 });
      const took = Date.now() - started;
      const state = (await c.inspect()).State;
      assert.is(state.ExitCode, 0);
      assert.ok(took < 1500, `stop took ${took} ms (SIGTERM ignored, killed after the grace period?)`);
    } finally {
      await c.remove({ force: true });
    }
  });

  t(`${language} runner: stays up after EOF on stdin, still stops on SIGTERM`, async (ctx) => {
    // With StdinOnce the first detach closes the container's stdin for good: the runner sees EOF.
    const c = await runnerContainer(ctx, spec, true);
    try {
      const a = await attach(c);
      await c.start();
      assert.is((await a.next()).op, 'ready');
      a.send({ op: 'ping', id: 1 });
      assert.equal(await a.next(), { op: 'pong', id: 1 });
      a.end();
      assert.not.ok(await eventuallyStopped(c, 1000), 'runner exited on EOF');
      a.destroy();
      const started = Date.now();
      await c.stop({ t: 2 });
      assert.is((await c.inspect()).State.ExitCode, 0);
      assert.ok(Date.now() - started < 1500, 'SIGTERM after EOF is handled promptly');
    } finally {
      await c.remove({ force: true });
    }
  });
}

t.run();
