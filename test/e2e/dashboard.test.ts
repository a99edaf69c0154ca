// Seeing the actors: /dashboard in headless Chromium (Debian's chromium driven by playwright-core)
// follows a session's node live from creation to TERMINATED, with its kernel placed on the agent
// and its history on click; a user keypair is refused; the page's plain-JS HMAC (for plain http
// off localhost) matches Node's. And `flotilla actors` against the same manager: the tree, --json,
// a filter, and --watch --json until SIGINT.
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { ActorGraphSnapshot } from '../../runtime/sdk/inspect.ts';
import { startInProcess, type InProcessCluster } from '../helpers/in-process.ts';
import { eventually, suite } from '../helpers/suite.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const OUTPUT = join(ROOT, 'test-output', 'dashboard');

type Ctx = InProcessCluster & { browser: Browser; userKeys: { ak: string; sk: string } };
const t = suite<Ctx>('dashboard and flotilla actors', { timeoutMs: 120_000 });

t.before(async (ctx) => {
  Object.assign(ctx, await startInProcess('dashboard'));
  const kp = await ctx.client.admin.createKeypair({ email: `u-${ctx.tag}@example.com` });
  ctx.userKeys = { ak: kp.access_key, sk: kp.secret_key };
  ctx.browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  mkdirSync(OUTPUT, { recursive: true });
});
t.after(async (ctx) => {
  await ctx.browser?.close();
  await ctx.stop?.();
});

async function openPage(ctx: Ctx, hash: string): Promise<{ page: Page; errors: string[] }> {
  const page = await ctx.browser.newPage({ viewport: { width: 1400, height: 800 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(`${ctx.m.url}/dashboard${hash}`);
  return { page, errors };
}

t('the page and its scripts are served unsigned, same-origin only; without keys it asks for them', async (ctx) => {
  const res = await fetch(`${ctx.m.url}/dashboard`);
  assert.is(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/html/);
  assert.match(res.headers.get('content-security-policy') ?? '', /script-src 'self'/);
  assert.match(await res.text(), /\/dashboard\/dashboard\.js/);
  const io = await fetch(`${ctx.m.url}/dashboard/socket.io.min.js`);
  assert.is(io.status, 200);
  assert.match(await io.text(), /Socket/);
  // Other routes still need a signature.
  assert.is((await fetch(`${ctx.m.url}/admin/actors`)).status, 401);

  const { page, errors } = await openPage(ctx, '');
  await page.waitForSelector('#login:not(.hidden)');
  assert.ok(await page.isHidden('#view'));
  assert.equal(errors, []);
  await page.close();
});

t('a session node appears, turns RUNNING with its kernel placed on the agent, then TERMINATED, live', async (ctx) => {
  const { page, errors } = await openPage(ctx, `#ak=${encodeURIComponent(ctx.ak)}&sk=${encodeURIComponent(ctx.sk)}`);
  await page.waitForSelector('#conn[data-state="connected"]', { timeout: 15_000 });
  assert.is(new URL(page.url()).hash, '', 'the keys leave the address bar');
  await page.waitForSelector(`g.node[data-kind="agent"][data-id="${ctx.agent.agentId}"][data-status="ALIVE"]`);
  // Every status the session's node shows, in order, recorded in the page: no reload happens.
  // (A string: tsx would wrap named functions in a helper the page does not have.)
  await page.evaluate(`(() => {
    const seen = (window.seen = []);
    new MutationObserver(() => {
      for (const g of document.querySelectorAll('g.node[data-kind="session"]')) {
        const v = g.getAttribute('data-id') + '=' + g.getAttribute('data-status');
        if (!seen.includes(v)) seen.push(v);
      }
    }).observe(document.getElementById('graph'), { childList: true, subtree: true });
  })()`);

  const s = await ctx.client.sessions.create({ name: `dash-${ctx.tag}`, image: 'python', resources: { cpu: '0.5', mem: '256m' } });
  const session = `g.node[data-id="${s.sessionId}"]`;
  await page.waitForSelector(`${session}[data-status="RUNNING"]`, { timeout: 30_000 });
  const kernelId = (await ctx.client.sessions.get(s.sessionId)).kernels[0].kernelId;
  await page.waitForSelector(`g.node[data-id="${kernelId}"][data-kind="kernel"][data-status="RUNNING"]`);
  assert.is(await page.locator(`path.edge.supervision[data-from="${s.sessionId}"][data-to="${kernelId}"]`).count(), 1, 'session supervises kernel');
  assert.is(await page.locator(`path.edge.placement[data-from="${kernelId}"][data-to="${ctx.agent.agentId}"]`).count(), 1, 'kernel placed on the agent');
  assert.match(await page.textContent(session) ?? '', new RegExp(`dash-${ctx.tag}`));

  await page.click(session);
  await page.waitForSelector('#details-events');
  const history = await page.textContent('#details-events') ?? '';
  assert.match(history, /SCHEDULE/, 'the history of the node');
  assert.match(await page.textContent('#details-accepts') ?? '', /TERMINATE/, 'what a RUNNING session accepts');
  assert.match(await page.textContent('#details-info') ?? '', /deadline/);
  await page.screenshot({ path: join(OUTPUT, 'session-running.png'), fullPage: true });

  await ctx.client.sessions.destroy(s.sessionId);
  await page.waitForSelector(`${session}[data-status="TERMINATED"]`, { timeout: 30_000 });
  // The details panel follows the selected node as it changes.
  await eventually(async () => /TERMINATED/.test(await page.textContent('#details-info') ?? ''), 5000, 'details show TERMINATED');
  await page.screenshot({ path: join(OUTPUT, 'session-terminated.png'), fullPage: true });
  const seen = await page.evaluate(() => (window as unknown as { seen: string[] }).seen);
  const mine = seen.filter((v) => v.startsWith(`${s.sessionId}=`)).map((v) => v.split('=')[1]);
  assert.ok(mine.indexOf('RUNNING') >= 0 && mine.indexOf('RUNNING') < mine.indexOf('TERMINATED'), `RUNNING then TERMINATED in one page life (${mine.join(' → ')})`);
  assert.equal(errors, []);
  await page.close();
});

t('a user keypair is refused and the page asks again; the page\'s plain-JS HMAC matches Node\'s', async (ctx) => {
  const { page } = await openPage(ctx, `#ak=${ctx.userKeys.ak}&sk=${encodeURIComponent(ctx.userKeys.sk)}`);
  await page.waitForSelector('#login:not(.hidden)', { timeout: 15_000 });
  assert.match(await page.textContent('#login-error') ?? '', /admin only/);
  for (const [key, msg] of [['k', ''], [randomBytes(20).toString('base64'), 'GET\n/socket.io\nx'], ['x'.repeat(100), 'long key, hashed first'.repeat(20)]]) {
    const ours = await page.evaluate(([k, m]) => (window as unknown as { flotillaDashboard: { hmacFallback(k: string, m: string): string } }).flotillaDashboard.hmacFallback(k, m), [key, msg]);
    assert.is(ours, createHmac('sha256', key).update(msg).digest('hex'));
  }
  await page.close();
});

// `flotilla actors` is registered in runtime/cli/main.ts; run the command module the same way.
const CLI = `import { Command } from 'commander';
import { registerActorCommands } from './runtime/cli/actors.ts';
const p = new Command(); p.name('flotilla'); registerActorCommands(p); await p.parseAsync(process.argv.slice(1), { from: 'user' });`;

function actors(ctx: Ctx, args: string[], opts: { until?: RegExp } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CLI, 'actors', ...args], {
      cwd: ROOT, env: { ...process.env, FLOTILLA_MANAGER_URLS: ctx.m.url, FLOTILLA_ACCESS_KEY: ctx.ak, FLOTILLA_SECRET_KEY: ctx.sk },
    });
    let stdout = '', stderr = '';
    child.stdout.on('data', (b: Buffer) => {
      stdout += b;
      if (opts.until?.test(stdout)) child.kill('SIGINT');
    });
    child.stderr.on('data', (b: Buffer) => { stderr += b; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

t('flotilla actors prints the tree, --json the graph, --session filters, --watch --json follows until SIGINT', async (ctx) => {
  const s = await ctx.client.sessions.create({ name: `tree-${ctx.tag}`, image: 'python', resources: { cpu: '0.5', mem: '256m' } });
  const kernel = (await ctx.client.sessions.get(s.sessionId)).kernels[0];
  const tree = await actors(ctx, []);
  assert.is(tree.code, 0, tree.stderr);
  assert.match(tree.stdout, /^manager:\S+\s+RUNNING\s+up \d/);
  assert.match(tree.stdout, new RegExp(`[├└]─ ${ctx.agent.agentId}\\s+ALIVE`));
  assert.match(tree.stdout, new RegExp(`[├└]─ tree-${ctx.tag} ${s.sessionId.slice(0, 8)}\\s+RUNNING`));
  assert.match(tree.stdout, new RegExp(`[├└]─ ${kernel.hostname} \\S+\\s+RUNNING\\s+on ${ctx.agent.agentId}`));

  const json = await actors(ctx, ['--json', '--session', s.sessionId]);
  assert.is(json.code, 0, json.stderr);
  const g = JSON.parse(json.stdout) as ActorGraphSnapshot;
  assert.equal(g.nodes.map((n) => n.id).sort(), [s.sessionId, kernel.kernelId].sort());

  const watch = await actors(ctx, ['--watch', '--json'], { until: /"graph"/ });
  assert.is(watch.code, 0, `exits 0 on SIGINT: ${watch.stderr}`);
  const first = JSON.parse(watch.stdout.split('\n')[0]) as { graph: ActorGraphSnapshot };
  assert.ok(first.graph.nodes.some((n) => n.id === s.sessionId && n.status === 'RUNNING'));

  const refused = await actors({ ...ctx, ak: ctx.userKeys.ak, sk: ctx.userKeys.sk }, []);
  assert.is(refused.code, 1);
  assert.match(refused.stderr, /admin only/);
  await ctx.client.sessions.destroy(s.sessionId);
});

t.run();
