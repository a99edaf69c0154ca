// uvu has no per-test timeout: every test and hook here races a timer, so a hung service
// fails the test with a message instead of hanging the run.
import { suite as uvuSuite } from 'uvu';

export async function withTimeout<T>(label: string, ms: number, fn: () => Promise<T> | T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      Promise.resolve().then(fn),
      new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms); }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

type Fn<C> = (ctx: C) => unknown;
export interface TimedSuite<C> {
  (title: string, fn: Fn<C>): void;
  before(fn: Fn<C>): void;
  after(fn: Fn<C>): void;
  run(): void;
}

export function suite<C extends object = Record<string, unknown>>(name: string, opts: { timeoutMs?: number; hookTimeoutMs?: number } = {}): TimedSuite<C> {
  const s = uvuSuite<C>(name);
  const ms = opts.timeoutMs ?? 60_000;
  const hookMs = opts.hookTimeoutMs ?? 180_000;
  // uvu swallows an error thrown by a `before` hook (its runner returns from `finally`) and
  // reports the suite as passing with 0 tests run: keep the error and fail every test with it.
  let beforeError: unknown;
  const t = ((title: string, fn: Fn<C>) => s(title, async (ctx) => {
    if (beforeError) throw beforeError;
    await withTimeout(`${name} › ${title}`, ms, () => fn(ctx));
  })) as TimedSuite<C>;
  t.before = (fn) => s.before(async (ctx) => {
    try { await withTimeout(`${name} › before`, hookMs, () => fn(ctx)); } catch (e) { beforeError = e; }
  });
  t.after = (fn) => s.after(async (ctx) => { await withTimeout(`${name} › after`, hookMs, () => fn(ctx)); });
  t.run = () => s.run();
  return t;
}

/** Poll until check() returns a truthy value or ms pass. */
export async function eventually<T>(check: () => Promise<T> | T, ms = 10_000, label = 'condition'): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`not reached within ${ms} ms: ${label}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
