// The kernel statechart (actors/kernel.ts), driven through a parent harness that receives its
// KERNEL_STATUS reports, with effects the test controls.
import * as assert from 'uvu/assert';
import { SimulatedClock, waitFor } from 'xstate';
import { kernelMachine, type KernelEvent } from '../../actors/kernel.ts';
import { KERNEL_STATUSES, type KernelStatus } from '../../schema/status.ts';
import { suite } from '../helpers/suite.ts';
import {
  kernelEffects, kernelFingerprint, kernelInput, settle, startKernel, statuses, stopAll,
  type KernelEffects, type KernelRef, type Mode, type EffectName,
} from '../helpers/machines.ts';

const test = suite('kernel machine', { timeoutMs: 5_000 });
test.after(() => stopAll());

const at = (kernel: KernelRef, value: string, timeout = 2_000) =>
  waitFor(kernel, (s) => s.value === value || (typeof s.value === 'object' && value in s.value), { timeout });

/** Start a kernel and take it to RUNNING with effects that settle at once. */
async function running(modes: Partial<Record<EffectName, Mode>> = {}) {
  const fx = kernelEffects(modes);
  const k = startKernel(fx);
  k.kernel.send({ type: 'SCHEDULE', agentId: 'agent-1' });
  await at(k.kernel, 'RUNNING');
  return { fx, ...k };
}

// ---- the happy path -----------------------------------------------------------------------------

test('walks PENDING → SCHEDULED → PREPARING → CREATING → RUNNING → TERMINATING → TERMINATED one effect at a time', async () => {
  const fx = kernelEffects({ awaitDurable: 'hold', prepareKernel: 'hold', createKernel: 'hold', destroyKernel: 'hold' });
  const { kernel, reports } = startKernel(fx);
  assert.is(kernel.getSnapshot().value, 'PENDING');

  kernel.send({ type: 'SCHEDULE', agentId: 'agent-1' });
  await at(kernel, 'SCHEDULED');
  assert.is(kernel.getSnapshot().context.agentId, 'agent-1');
  assert.is(fx.awaitDurable.count(), 1);
  assert.is(fx.prepareKernel.count(), 0, 'nothing touches the agent before SCHEDULED is durable');

  fx.awaitDurable.resolve();
  await at(kernel, 'PREPARING');
  assert.is(fx.prepareKernel.count(), 1);

  fx.prepareKernel.resolve();
  await at(kernel, 'CREATING');
  assert.is(fx.createKernel.count(), 1);

  fx.createKernel.resolve();
  await at(kernel, 'RUNNING');
  assert.is(kernel.getSnapshot().context.containerId, 'container-sess-1-k0');
  assert.is(kernel.getSnapshot().context.deadlineAt, undefined, 'RUNNING has no deadline');

  kernel.send({ type: 'TERMINATE', reason: 'user-requested' });
  await at(kernel, 'TERMINATING');
  assert.is(kernel.getSnapshot().context.statusInfo, 'user-requested');
  assert.is(kernel.getSnapshot().context.forced, false);
  assert.is(fx.destroyKernel.count(), 1);

  fx.destroyKernel.resolve();
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(kernel.getSnapshot().value, 'TERMINATED');
  const walk: KernelStatus[] = ['PENDING', 'SCHEDULED', 'PREPARING', 'CREATING', 'RUNNING', 'TERMINATING', 'TERMINATED'];
  assert.equal(statuses(kernel.getSnapshot().context.history), walk, 'every status entered is in the history, in order');
  assert.equal(reports().map((r) => r.status), walk, 'every status entered is reported to the parent, in order');
  assert.ok(reports().every((r) => r.kernelId === 'sess-1-k0'));
});

test('history and reports keep a status that lasts no time (effects that settle at once)', async () => {
  const { kernel, reports } = await running();
  const walk = ['PENDING', 'SCHEDULED', 'PREPARING', 'CREATING', 'RUNNING'];
  assert.equal(statuses(kernel.getSnapshot().context.history), walk);
  assert.equal(reports().map((r) => r.status), walk);
});

test('each effect gets the kernel context as its input', async () => {
  const { fx } = await running();
  const seen = fx.createKernel.calls[0].input.kernel;
  assert.is(seen.kernelId, 'sess-1-k0');
  assert.is(seen.agentId, 'agent-1');
  assert.is(seen.image, 'cr.example/python:3.12');
});

test('PREPARING and CREATING set their deadline as a timestamp from the input and clear it on exit', async () => {
  const fx = kernelEffects({ prepareKernel: 'hold', createKernel: 'hold' });
  const { kernel } = startKernel(fx, kernelInput(0, { deadlines: { preparingMs: 50, creatingMs: 70, terminatingMs: 90 } }));
  const t0 = Date.now();
  kernel.send({ type: 'SCHEDULE', agentId: 'agent-1' });
  await at(kernel, 'PREPARING');
  const p = kernel.getSnapshot().context.deadlineAt!;
  assert.ok(p >= t0 + 50 && p <= Date.now() + 50, `PREPARING deadline ${p - t0} ms after start`);
  fx.prepareKernel.resolve();
  await at(kernel, 'CREATING');
  const c = kernel.getSnapshot().context.deadlineAt!;
  assert.ok(c >= t0 + 70 && c <= Date.now() + 70, `CREATING deadline ${c - t0} ms after start`);
  fx.createKernel.resolve();
  await at(kernel, 'RUNNING');
  assert.is(kernel.getSnapshot().context.deadlineAt, undefined);
});

// ---- cancellation ------------------------------------------------------------------------------

for (const type of ['CANCEL', 'TERMINATE'] as const) {
  test(`${type} in PENDING → CANCELLED with the reason, no effect run`, async () => {
    const fx = kernelEffects();
    const { kernel, reports } = startKernel(fx);
    kernel.send({ type, reason: 'user-cancelled' });
    await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
    assert.is(kernel.getSnapshot().value, 'CANCELLED');
    assert.is(kernel.getSnapshot().context.statusInfo, 'user-cancelled');
    assert.equal(statuses(kernel.getSnapshot().context.history), ['PENDING', 'CANCELLED']);
    assert.equal(reports().at(-1), { type: 'KERNEL_STATUS', kernelId: 'sess-1-k0', status: 'CANCELLED', statusInfo: 'user-cancelled', exitCode: undefined });
    assert.is(fx.awaitDurable.count() + fx.destroyKernel.count(), 0);
  });

  test(`${type} in SCHEDULED → CANCELLED: the durable wait is abandoned and PREPARING never starts`, async () => {
    const fx = kernelEffects({ awaitDurable: 'hold' });
    const { kernel } = startKernel(fx);
    kernel.send({ type: 'SCHEDULE', agentId: 'agent-1' });
    await at(kernel, 'SCHEDULED');
    kernel.send({ type, reason: 'user-cancelled' });
    await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
    assert.is(kernel.getSnapshot().value, 'CANCELLED');
    assert.ok(fx.awaitDurable.calls[0].aborted, 'the awaitDurable actor was stopped');
    assert.is(fx.awaitDurable.resolve(), 0);
    await settle();
    assert.is(fx.prepareKernel.count(), 0);
    assert.is(fx.destroyKernel.count(), 0, 'nothing ran on the agent, nothing to destroy');
  });
}

// ---- failures ----------------------------------------------------------------------------------

test('entering a status is one context update, its history entry and deadline together, with no exit action (each assign clones the snapshot; the manager runs this for every kernel)', () => {
  const typeOf = (a: unknown) => (typeof a === 'string' ? a : (a as { type?: string }).type);
  for (const [name, node] of Object.entries(kernelMachine.states)) {
    const updates = node.entry.map(typeOf).filter((t) => t === 'record' || t === 'xstate.assign');
    if (name === 'ended') assert.is(updates.length, 0, 'ended is transient');
    else assert.equal(updates, ['record'], `${name} entry: ${node.entry.map(typeOf).join(', ')}`);
    assert.is(node.exit.length, 0, `${name} has exit actions: ${node.exit.map(typeOf).join(', ')}`);
  }
});

test('prepareKernel failing → TERMINATING (failed-to-prepare, error in statusData) → ERROR', async () => {
  const fx = kernelEffects({ prepareKernel: 'hold', destroyKernel: 'hold' });
  const { kernel } = startKernel(fx);
  kernel.send({ type: 'SCHEDULE', agentId: 'agent-1' });
  await at(kernel, 'PREPARING');
  fx.prepareKernel.reject(undefined, new Error('image pull failed'));
  await at(kernel, 'TERMINATING');
  const c = kernel.getSnapshot().context;
  assert.is(c.statusInfo, 'failed-to-prepare');
  assert.equal(c.statusData, { error: 'image pull failed' });
  assert.is(c.finalStatus, 'ERROR');
  assert.is(fx.createKernel.count(), 0);
  fx.destroyKernel.resolve();
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(kernel.getSnapshot().value, 'ERROR');
  assert.equal(statuses(kernel.getSnapshot().context.history), ['PENDING', 'SCHEDULED', 'PREPARING', 'TERMINATING', 'ERROR']);
});

test('createKernel failing → TERMINATING (failed-to-start) → ERROR, the destroy still runs', async () => {
  const fx = kernelEffects({ createKernel: 'reject' });
  const { kernel, reports } = startKernel(fx);
  kernel.send({ type: 'SCHEDULE', agentId: 'agent-1' });
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(kernel.getSnapshot().value, 'ERROR');
  assert.is(kernel.getSnapshot().context.statusInfo, 'failed-to-start');
  assert.equal(kernel.getSnapshot().context.statusData, { error: 'createKernel failed' });
  assert.is(fx.destroyKernel.count(), 1, 'a half-made container is destroyed');
  assert.equal(reports().map((r) => r.status).slice(-3), ['CREATING', 'TERMINATING', 'ERROR']);
  assert.is(reports().at(-1)!.statusInfo, 'failed-to-start');
});

test('a non-Error rejection is kept as its string', async () => {
  const fx = kernelEffects({ createKernel: 'hold' });
  const { kernel } = startKernel(fx);
  kernel.send({ type: 'SCHEDULE', agentId: 'agent-1' });
  await at(kernel, 'CREATING');
  fx.createKernel.reject(undefined, 'agent said no');
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.equal(kernel.getSnapshot().context.statusData, { error: 'agent said no' });
});

// DESIGN.md §2: "failures are events the chart handles (retry, ERROR), never uncaught
// exceptions". Guards SCHEDULED's awaitDurable onError: without it a rejection errored the
// kernel actor and, as its child, the session.
test('awaitDurable failing in SCHEDULED is handled by the chart, not an actor error', async () => {
  const fx = kernelEffects({ awaitDurable: 'hold' });
  const { kernel, harness } = startKernel(fx);
  kernel.send({ type: 'SCHEDULE', agentId: 'agent-1' });
  await at(kernel, 'SCHEDULED');
  fx.awaitDurable.reject(undefined, new Error('commit failed'));
  await settle();
  assert.is.not(kernel.getSnapshot().status, 'error', `kernel actor errored: ${String(kernel.getSnapshot().error)}`);
  assert.is(harness.errors.length, 0);
});

// ---- RUNNING ⇄ RESTARTING ----------------------------------------------------------------------

test('RUNNING → RESTARTING on RESTART → RUNNING when restartKernel resolves', async () => {
  const { fx, kernel, reports } = await running({ restartKernel: 'hold' });
  kernel.send({ type: 'RESTART' });
  await at(kernel, 'RESTARTING');
  assert.is(fx.restartKernel.count(), 1);
  fx.restartKernel.resolve();
  await at(kernel, 'RUNNING');
  kernel.send({ type: 'RESTART' });
  await at(kernel, 'RESTARTING');
  fx.restartKernel.resolve();
  await at(kernel, 'RUNNING');
  assert.equal(reports().map((r) => r.status).slice(-5), ['RUNNING', 'RESTARTING', 'RUNNING', 'RESTARTING', 'RUNNING']);
  assert.is(fx.restartKernel.count(), 2);
});

test('restartKernel failing → TERMINATING (failed-to-restart) → ERROR', async () => {
  const { kernel } = await running({ restartKernel: 'reject' });
  kernel.send({ type: 'RESTART' });
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(kernel.getSnapshot().value, 'ERROR');
  assert.is(kernel.getSnapshot().context.statusInfo, 'failed-to-restart');
  assert.equal(statuses(kernel.getSnapshot().context.history).slice(-4), ['RUNNING', 'RESTARTING', 'TERMINATING', 'ERROR']);
});

test('TERMINATE during RESTARTING → TERMINATING and the restart is abandoned', async () => {
  const { fx, kernel } = await running({ restartKernel: 'hold' });
  kernel.send({ type: 'RESTART' });
  await at(kernel, 'RESTARTING');
  kernel.send({ type: 'TERMINATE', reason: 'user-requested' });
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(kernel.getSnapshot().value, 'TERMINATED');
  assert.ok(fx.restartKernel.calls[0].aborted);
});

test('CONTAINER_EXITED during RESTARTING records the exit code and stays RESTARTING', async () => {
  const { kernel } = await running({ restartKernel: 'hold' });
  kernel.send({ type: 'RESTART' });
  await at(kernel, 'RESTARTING');
  kernel.send({ type: 'CONTAINER_EXITED', exitCode: 143 });
  await settle();
  assert.is(kernel.getSnapshot().value, 'RESTARTING');
  assert.is(kernel.getSnapshot().context.exitCode, 143);
});

// ---- the container ends on its own -------------------------------------------------------------

test('CONTAINER_EXITED with a non-zero code while RUNNING → ERROR, self-terminated (exit code 137), {exitCode} in statusData', async () => {
  const { kernel, reports } = await running();
  kernel.send({ type: 'CONTAINER_EXITED', exitCode: 137 });
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  const c = kernel.getSnapshot().context;
  assert.is(kernel.getSnapshot().value, 'ERROR');
  assert.is(c.statusInfo, 'self-terminated (exit code 137)');
  assert.equal(c.statusData, { exitCode: 137 });
  assert.is(c.exitCode, 137);
  assert.equal(reports().at(-1), { type: 'KERNEL_STATUS', kernelId: 'sess-1-k0', status: 'ERROR', statusInfo: 'self-terminated (exit code 137)', exitCode: 137 });
});

test('CONTAINER_EXITED with exit code 0 while RUNNING → TERMINATED', async () => {
  const { kernel } = await running();
  kernel.send({ type: 'CONTAINER_EXITED', exitCode: 0 });
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(kernel.getSnapshot().value, 'TERMINATED');
  assert.is(kernel.getSnapshot().context.statusInfo, 'self-terminated (exit code 0)');
  assert.equal(kernel.getSnapshot().context.statusData, { exitCode: 0 });
});

test('CONTAINER_MISSING while RUNNING → TERMINATING → ERROR with the reason', async () => {
  const { kernel, fx } = await running();
  kernel.send({ type: 'CONTAINER_MISSING', reason: 'container-gone' });
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(kernel.getSnapshot().value, 'ERROR');
  assert.is(kernel.getSnapshot().context.statusInfo, 'container-gone');
  assert.is(fx.destroyKernel.count(), 1, 'destroy of a gone container is still asked (it is idempotent)');
});

test('CONTAINER_EXITED during TERMINATING keeps the first exit code', async () => {
  const { kernel } = await running({ destroyKernel: 'hold' });
  kernel.send({ type: 'CONTAINER_EXITED', exitCode: 137 });
  await at(kernel, 'TERMINATING');
  kernel.send({ type: 'CONTAINER_EXITED', exitCode: 0 });
  await settle();
  assert.is(kernel.getSnapshot().context.exitCode, 137);
  assert.is(kernel.getSnapshot().context.finalStatus, 'ERROR');
});

test('CONTAINER_EXITED during a plain TERMINATING records the exit code, final status unchanged', async () => {
  const { fx, kernel } = await running({ destroyKernel: 'hold' });
  kernel.send({ type: 'TERMINATE', reason: 'user-requested' });
  await at(kernel, 'TERMINATING');
  kernel.send({ type: 'CONTAINER_EXITED', exitCode: 143 });
  await settle();
  assert.is(kernel.getSnapshot().context.exitCode, 143);
  fx.destroyKernel.resolve();
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(kernel.getSnapshot().value, 'TERMINATED');
});

test('TERMINATE with forced: true is recorded in context', async () => {
  const { kernel } = await running({ destroyKernel: 'hold' });
  kernel.send({ type: 'TERMINATE', reason: 'admin', forced: true });
  await at(kernel, 'TERMINATING');
  assert.is(kernel.getSnapshot().context.forced, true);
});

// ---- deadlines ---------------------------------------------------------------------------------

for (const [state, effect, info] of [['PREPARING', 'prepareKernel', 'preparing-timeout'], ['CREATING', 'createKernel', 'creating-timeout']] as const) {
  test(`DEADLINE at deadlineAt in ${state} → TERMINATING (${info}) → ERROR, the ${effect} is abandoned`, async () => {
    const fx = kernelEffects({ [effect]: 'hold' });
    const { kernel } = startKernel(fx);
    kernel.send({ type: 'SCHEDULE', agentId: 'agent-1' });
    await at(kernel, state);
    const deadlineAt = kernel.getSnapshot().context.deadlineAt!;
    kernel.send({ type: 'DEADLINE', now: deadlineAt });
    await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
    assert.is(kernel.getSnapshot().value, 'ERROR');
    assert.is(kernel.getSnapshot().context.statusInfo, info);
    assert.ok(fx[effect].calls[0].aborted);
    assert.equal(statuses(kernel.getSnapshot().context.history).slice(-3), [state, 'TERMINATING', 'ERROR']);
  });

  test(`a stale DEADLINE (now < deadlineAt) in ${state} is ignored`, async () => {
    const fx = kernelEffects({ [effect]: 'hold' });
    const { kernel } = startKernel(fx);
    kernel.send({ type: 'SCHEDULE', agentId: 'agent-1' });
    await at(kernel, state);
    const before = kernelFingerprint(kernel);
    kernel.send({ type: 'DEADLINE', now: before.context.deadlineAt - 1 });
    await settle();
    assert.equal(kernelFingerprint(kernel), before);
    assert.is(fx[effect].pending().length, 1, 'the effect is still in flight');
  });
}

test('TERMINATING past its deadline is forced to TERMINATED (after a plain TERMINATE), marked terminating-timeout', async () => {
  const { fx, kernel } = await running({ destroyKernel: 'hold' });
  kernel.send({ type: 'TERMINATE', reason: 'user-requested' });
  await at(kernel, 'TERMINATING');
  kernel.send({ type: 'DEADLINE', now: kernel.getSnapshot().context.deadlineAt! + 1 });
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(kernel.getSnapshot().value, 'TERMINATED');
  assert.equal(kernel.getSnapshot().context.statusData, { forced: 'terminating-timeout' });
  assert.ok(fx.destroyKernel.calls[0].aborted, 'the hung destroy is abandoned');
});

test('TERMINATING past its deadline is forced to ERROR after a failure, keeping the failure data', async () => {
  const { kernel } = await running({ destroyKernel: 'hold' });
  kernel.send({ type: 'CONTAINER_EXITED', exitCode: 137 });
  await at(kernel, 'TERMINATING');
  kernel.send({ type: 'DEADLINE', now: kernel.getSnapshot().context.deadlineAt! });
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(kernel.getSnapshot().value, 'ERROR');
  assert.equal(kernel.getSnapshot().context.statusData, { exitCode: 137, forced: 'terminating-timeout' });
});

test('a stale DEADLINE in TERMINATING is ignored', async () => {
  const { fx, kernel } = await running({ destroyKernel: 'hold' });
  kernel.send({ type: 'TERMINATE', reason: 'user-requested' });
  await at(kernel, 'TERMINATING');
  const before = kernelFingerprint(kernel);
  kernel.send({ type: 'DEADLINE', now: before.context.deadlineAt - 1 });
  await settle();
  assert.equal(kernelFingerprint(kernel), before);
  assert.is(fx.destroyKernel.pending().length, 1);
});

// ---- destroy retries (simulated clock for the 1 s backoff) -------------------------------------

async function terminatingWithClock() {
  const clock = new SimulatedClock();
  const fx = kernelEffects({ destroyKernel: 'hold' });
  const k = startKernel(fx, kernelInput(), { clock });
  k.kernel.send({ type: 'SCHEDULE', agentId: 'agent-1' });
  await at(k.kernel, 'RUNNING');
  k.kernel.send({ type: 'TERMINATE', reason: 'user-requested' });
  await at(k.kernel, 'TERMINATING');
  return { clock, fx, ...k };
}

/** Fail the pending destroy and let the backoff pass on the simulated clock. */
async function failDestroyOnce(clock: SimulatedClock, fx: KernelEffects, kernel: KernelRef) {
  assert.is(fx.destroyKernel.reject(), 1);
  await waitFor(kernel, (s) => s.matches({ TERMINATING: 'backoff' }), { timeout: 2_000 });
  clock.increment(999);
  await settle();
  assert.ok(kernel.getSnapshot().matches({ TERMINATING: 'backoff' }), 'the backoff lasts 1 s');
  clock.increment(1);
  await waitFor(kernel, (s) => s.matches({ TERMINATING: 'destroying' }), { timeout: 2_000 });
}

test('a failing destroyKernel is retried after a backoff and the kernel ends when one succeeds', async () => {
  const { clock, fx, kernel } = await terminatingWithClock();
  await failDestroyOnce(clock, fx, kernel);
  await failDestroyOnce(clock, fx, kernel);
  assert.is(fx.destroyKernel.count(), 3);
  assert.is(kernel.getSnapshot().context.destroyAttempts, 2);
  fx.destroyKernel.resolve();
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(kernel.getSnapshot().value, 'TERMINATED');
  assert.is(kernel.getSnapshot().context.statusData, undefined);
  assert.equal(statuses(kernel.getSnapshot().context.history).slice(-2), ['TERMINATING', 'TERMINATED'], 'retries do not re-enter TERMINATING');
});

test('a destroyKernel that keeps failing is retried 5 times, then the kernel ends with destroyError', async () => {
  const { clock, fx, kernel } = await terminatingWithClock();
  for (let i = 0; i < 5; i++) await failDestroyOnce(clock, fx, kernel);
  assert.is(fx.destroyKernel.count(), 6);
  fx.destroyKernel.reject(undefined, new Error('agent unreachable'));
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(kernel.getSnapshot().value, 'TERMINATED');
  assert.equal(kernel.getSnapshot().context.statusData, { destroyError: 'agent unreachable' });
  assert.is(fx.destroyKernel.count(), 6, '1 attempt + 5 retries');
});

test('DEADLINE during the destroy backoff forces the end', async () => {
  const { clock, fx, kernel } = await terminatingWithClock();
  fx.destroyKernel.reject();
  await waitFor(kernel, (s) => s.matches({ TERMINATING: 'backoff' }), { timeout: 2_000 });
  kernel.send({ type: 'DEADLINE', now: kernel.getSnapshot().context.deadlineAt! });
  await waitFor(kernel, (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(kernel.getSnapshot().value, 'TERMINATED');
  clock.increment(5_000);
  await settle();
  assert.is(fx.destroyKernel.count(), 1, 'the backoff timer was cancelled');
});

// ---- every other event is ignored --------------------------------------------------------------

const KERNEL_EVENT_SAMPLES = {
  SCHEDULE: { type: 'SCHEDULE', agentId: 'agent-other' },
  CANCEL: { type: 'CANCEL', reason: 'stray-cancel' },
  TERMINATE: { type: 'TERMINATE', reason: 'stray-terminate', forced: true },
  RESTART: { type: 'RESTART' },
  CONTAINER_EXITED: { type: 'CONTAINER_EXITED', exitCode: 137 },
  CONTAINER_MISSING: { type: 'CONTAINER_MISSING', reason: 'stray-missing' },
  // A deadline long past: if the state took DEADLINE at all, it would act on this one.
  DEADLINE: { type: 'DEADLINE', now: Number.MAX_SAFE_INTEGER },
} satisfies { [T in KernelEvent['type']]: Extract<KernelEvent, { type: T }> };
const KERNEL_EVENT_TYPES = Object.keys(KERNEL_EVENT_SAMPLES) as KernelEvent['type'][];

type StateNodeLike = { config: { on?: Record<string, unknown> }; states: Record<string, StateNodeLike> };

/** The events a state (with its substates) takes, read from the chart's own `on` config. */
function acceptedBy(node: StateNodeLike): KernelEvent['type'][] {
  const own = Object.keys(node.config.on ?? {});
  const nested = Object.values(node.states).flatMap(acceptedBy);
  return KERNEL_EVENT_TYPES.filter((t) => own.includes(t) || nested.includes(t));
}
const kernelStates = kernelMachine.root.states as unknown as Record<string, StateNodeLike>;
const KERNEL_ACCEPTS = Object.fromEntries(Object.entries(kernelStates).map(([name, node]) => [name, acceptedBy(node)]));

test('the accepted-event table read from the chart is the documented one', () => {
  assert.equal(KERNEL_ACCEPTS, {
    PENDING: ['SCHEDULE', 'CANCEL', 'TERMINATE'],
    SCHEDULED: ['CANCEL', 'TERMINATE'],
    PREPARING: ['TERMINATE', 'DEADLINE'],
    CREATING: ['TERMINATE', 'DEADLINE'],
    RUNNING: ['TERMINATE', 'RESTART', 'CONTAINER_EXITED', 'CONTAINER_MISSING'],
    RESTARTING: ['TERMINATE', 'CONTAINER_EXITED'],
    TERMINATING: ['CONTAINER_EXITED', 'DEADLINE'],
    ended: [],
    TERMINATED: [],
    ERROR: [],
    CANCELLED: [],
  });
  // Every KernelStatus is a state of the chart (plus the transient `ended`).
  assert.equal(Object.keys(kernelStates).filter((s) => s !== 'ended').sort(), [...KERNEL_STATUSES].sort());
});

test('`ended` is transient: it only picks the final status', () => {
  const ended = kernelMachine.root.states.ended;
  assert.equal(Object.keys(ended.config.on ?? {}), []);
  assert.is(ended.always?.length, 2);
});

/** Take a lone kernel to a status and leave it resting there (the effect that would move it is held). */
async function reachKernel(status: KernelStatus) {
  const modes: Partial<Record<EffectName, Mode>> = {
    SCHEDULED: { awaitDurable: 'hold' as Mode },
    PREPARING: { prepareKernel: 'hold' as Mode },
    CREATING: { createKernel: 'hold' as Mode },
    RESTARTING: { restartKernel: 'hold' as Mode },
    TERMINATING: { destroyKernel: 'hold' as Mode },
  }[status as string] ?? {};
  const fx = kernelEffects(modes);
  const { kernel } = startKernel(fx);
  if (status === 'PENDING') return { fx, kernel };
  if (status === 'CANCELLED') kernel.send({ type: 'CANCEL', reason: 'user-cancelled' });
  else kernel.send({ type: 'SCHEDULE', agentId: 'agent-1' });
  if (status === 'RESTARTING') { await at(kernel, 'RUNNING'); kernel.send({ type: 'RESTART' }); }
  if (status === 'TERMINATING' || status === 'TERMINATED') { await at(kernel, 'RUNNING'); kernel.send({ type: 'TERMINATE', reason: 'user-requested' }); }
  if (status === 'ERROR') { await at(kernel, 'RUNNING'); kernel.send({ type: 'CONTAINER_EXITED', exitCode: 1 }); }
  await waitFor(kernel, (s) => s.value === status || s.matches(status), { timeout: 2_000 });
  await settle();
  assert.is(kernelValueName(kernel), status);
  return { fx, kernel };
}

const kernelValueName = (kernel: KernelRef) => {
  const v = kernel.getSnapshot().value;
  return typeof v === 'string' ? v : Object.keys(v)[0];
};

for (const status of KERNEL_STATUSES) {
  const refused = KERNEL_EVENT_TYPES.filter((t) => !KERNEL_ACCEPTS[status].includes(t));
  test(`${status} ignores ${refused.join(', ') || 'nothing'}: value, context and effects unchanged`, async () => {
    const { fx, kernel } = await reachKernel(status);
    const counts = () => Object.values(fx).map((e) => e.count());
    const before = kernelFingerprint(kernel);
    const callsBefore = counts();
    for (const type of refused) {
      kernel.send(KERNEL_EVENT_SAMPLES[type]);
      await settle();
      assert.equal(kernelFingerprint(kernel), before, `${status} changed on ${type}`);
      assert.equal(counts(), callsBefore, `${status} ran an effect on ${type}`);
    }
  });
}

test.run();
