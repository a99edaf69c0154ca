// The README's TypeScript examples, each run as it stands (only its import of the SDK pointed at
// this checkout) in a child process against a live cluster: what users copy must work.
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startInProcess, type InProcessCluster } from '../helpers/in-process.ts';
import { CLUSTER_CONFIG_PREFIX } from '../../config/cluster.ts';
import { eventually, suite } from '../helpers/suite.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const OUT = `${ROOT}test-output/readme/`;
const t = suite<InProcessCluster>('README examples', { timeoutMs: 120_000 });

t.before(async (ctx) => {
  Object.assign(ctx, await startInProcess('readme'));
  // The folders example writes to the storage root: a directory of this run's own.
  root = await mkdtemp(`${tmpdir()}/flotilla-readme-`);
  await ctx.stores.config.put(`${CLUSTER_CONFIG_PREFIX}vfolder.root`, root);
  await eventually(() => ctx.m.config.get('vfolder.root') === root, 10_000, 'vfolder.root applied');
});
t.after(async (ctx) => {
  await ctx.stop?.();
  if (root) await rm(root, { recursive: true, force: true });
});
let root = '';
/** What each example printed in the first test, by heading. */
const printed = new Map<string, string>();

/** Every ```ts block of the README with the heading it sits under. */
async function examples(): Promise<Array<{ heading: string; code: string }>> {
  const text = await readFile(`${ROOT}README.md`, 'utf8');
  const out: Array<{ heading: string; code: string }> = [];
  let heading = '';
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (/^#{2,3} /.test(lines[i])) heading = lines[i].replace(/^#+ /, '');
    if (lines[i].trim() === '```ts') {
      const body: string[] = [];
      for (i++; i < lines.length && lines[i].trim() !== '```'; i++) body.push(lines[i]);
      out.push({ heading, code: body.join('\n') });
    }
  }
  return out;
}

function runNode(file: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', file], { cwd: ROOT, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b) => { stdout += b; });
    child.stderr.on('data', (b) => { stderr += b; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 100_000);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

t('every TypeScript example of the README runs against a live cluster and exits 0', async (ctx) => {
  const blocks = await examples();
  assert.ok(blocks.length >= 5, `found ${blocks.length} examples`);
  await mkdir(OUT, { recursive: true });
  const sdk = pathToFileURL(`${ROOT}runtime/sdk/index.ts`).href;
  const env = { ...process.env, FLOTILLA_MANAGER_URLS: ctx.m.url, FLOTILLA_ACCESS_KEY: ctx.ak, FLOTILLA_SECRET_KEY: ctx.sk };
  for (const [i, b] of blocks.entries()) {
    assert.match(b.code, /from '\.\/runtime\/sdk\/index\.ts'/, `example ${i + 1} (${b.heading}) imports the SDK as the README says`);
    const file = `${OUT}example-${i + 1}.mts`;
    await writeFile(file, b.code.replace(/'\.\/runtime\/sdk\/index\.ts'/g, `'${sdk}'`));
    const r = await runNode(file, env);
    assert.is(r.code, 0, `example ${i + 1} (${b.heading}) failed:\n${r.stderr}\n${r.stdout}`);
    assert.ok(r.stdout.trim().length > 0, `example ${i + 1} (${b.heading}) printed what it shows`);
    printed.set(b.heading, r.stdout);
  }
});

t('the examples print what their comments say', async (ctx) => {
  const blocks = await examples();
  const sdk = pathToFileURL(`${ROOT}runtime/sdk/index.ts`).href;
  const env = { ...process.env, FLOTILLA_MANAGER_URLS: ctx.m.url, FLOTILLA_ACCESS_KEY: ctx.ak, FLOTILLA_SECRET_KEY: ctx.sk };
  const run = async (heading: string) => {
    const b = blocks.find((x) => x.heading === heading);
    assert.ok(b, `an example under "${heading}"`);
    const file = `${OUT}check-${heading.replace(/\W+/g, '-')}.mts`;
    await writeFile(file, b!.code.replace(/'\.\/runtime\/sdk\/index\.ts'/g, `'${sdk}'`));
    const r = await runNode(file, env);
    assert.is(r.code, 0, r.stderr);
    return r.stdout;
  };
  const session = await run('Run code in a session');
  assert.match(session, /^RUNNING\n41\n42\n43\n0\n/);
  assert.match(await run('Move files in and out'), /\[ 'input\.csv' \]/);
  assert.match(await run('One session as an object'), /^stdout "out\\n"\nstderr "err\\n"\n0\nsession_enqueued\n[\s\S]*session_started\n$/);
  const watched = await run('Watch sessions live');
  assert.match(watched, /session_enqueued[\s\S]*output: \[ \[ 'stdout', 'hello\\n' \] \][\s\S]*session_terminated/);
  assert.match(await run('Errors'), /404 session-not-found/);
  // The folders example ran in the first test (a second run would meet its folder).
  assert.is(printed.get('Keep data in virtual folders'), "[ 'numbers.txt', 'total.txt' ]\n6\n");
});

t.run();
