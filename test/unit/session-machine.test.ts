// The session statechart (actors/session.ts) with real kernel children whose effects the test
// controls: transitions, refusals, deriveSessionStatus, status history, restore, clusters.
import * as assert from 'uvu/assert';
import { SimulatedClock, waitFor } from 'xstate';
import {
  SESSION_ACCEPTS, SESSION_TRANSITIONS, deriveSessionStatus, sessionMachine,
  type KernelView, type SessionContext, type SessionEvent,
} from '../../actors/session.ts';
import { KERNEL_STATUSES, SESSION_STATUSES, type KernelStatus, type SessionStatus } from '../../schema/status.ts';
import { suite } from '../helpers/suite.ts';
import {
  kernelEffects, kernelOf, placeAll, restoreSession, sessionFingerprint, sessionInput, settle, startSession, statuses, stopAll,
  type EffectName, type KernelEffects, type Mode, type SessionRef,
} from '../helpers/machines.ts';

const test = suite('session machine', { timeoutMs: 5_000 });
test.after(() => stopAll());

const K0 = 'sess-1-k0';
const K1 = 'sess-1-k1';

const at = (session: SessionRef, status: SessionStatus, timeout = 2_000) =>
  waitFor(session, (s) => s.value === status, { timeout });
const done = (session: SessionRef) => waitFor(session, (s) => s.status === 'done', { timeout: 2_000 });
const kernelAt = (session: SessionRef, kernelId: string, status: KernelStatus) =>
  waitFor(kernelOf(session, kernelId), (s) => s.value === status || s.matches(status), { timeout: 2_000 });

/** Each consecutive pair of statuses in a history must be an allowed session transition. */
function assertAllowedWalk(history: { status: string }[]) {
  const walk = statuses(history) as SessionStatus[];
  assert.is(walk[0], 'PENDING');
  for (let i = 1; i < walk.length; i++) {
    assert.ok(SESSION_TRANSITIONS[walk[i - 1]].includes(walk[i]), `${walk[i - 1]} → ${walk[i]} is not in SESSION_TRANSITIONS`);
  }
}

/** A one-kernel (or n-kernel) session taken to RUNNING with effects that settle at once. */
async function running(modes: Partial<Record<EffectName, Mode>> = {}, kernels = 1, opts: { clock?: SimulatedClock } = {}) {
  const fx = kernelEffects(modes);
  const input = sessionInput(kernels);
  const session = startSession(fx, input, opts);
  session.send({ type: 'SCHEDULE', placements: placeAll(input) });
  await at(session, 'RUNNING');
  return { fx, input, session };
}

// ---- the happy path ------------------------------------------------------------------------------

test('walks PENDING → SCHEDULED → PREPARING → RUNNING → TERMINATING → TERMINATED, one effect at a time', async () => {
  const fx = kernelEffects({ awaitDurable: 'hold', prepareKernel: 'hold', createKernel: 'hold', destroyKernel: 'hold' });
  const input = sessionInput(1);
  const session = startSession(fx, input);
  await settle();
  assert.is(session.getSnapshot().value, 'PENDING');
  assert.is(session.getSnapshot().context.kernelViews[K0].status, 'PENDING');

  session.send({ type: 'SCHEDULE', placements: placeAll(input) });
  await at(session, 'SCHEDULED');
  assert.is(kernelOf(session, K0).getSnapshot().context.agentId, 'agent-1');

  fx.awaitDurable.resolve();
  await at(session, 'PREPARING');
  fx.prepareKernel.resolve();
  await kernelAt(session, K0, 'CREATING');
  await settle();
  assert.is(session.getSnapshot().value, 'PREPARING', 'CREATING is still PREPARING for the session');
  assert.is(session.getSnapshot().context.kernelViews[K0].status, 'CREATING');

  fx.createKernel.resolve();
  await at(session, 'RUNNING');

  session.send({ type: 'TERMINATE', reason: 'user-requested' });
  await at(session, 'TERMINATING');
  assert.equal(session.getSnapshot().context.termination, { reason: 'user-requested', forced: false });
  assert.is(session.getSnapshot().context.statusInfo, 'user-requested');
  assert.is(kernelOf(session, K0).getSnapshot().context.statusInfo, 'user-requested');

  fx.destroyKernel.resolve();
  await done(session);
  const s = session.getSnapshot();
  assert.is(s.value, 'TERMINATED');
  assert.equal(statuses(s.context.history), ['PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING', 'TERMINATING', 'TERMINATED']);
  assertAllowedWalk(s.context.history);
  assert.is(s.context.kernelViews[K0].status, 'TERMINATED');
});

test('SCHEDULED is in the history even when it lasts no time (every effect settles at once)', async () => {
  const { session } = await running();
  session.send({ type: 'TERMINATE', reason: 'user-requested' });
  await done(session);
  assert.equal(statuses(session.getSnapshot().context.history), ['PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING', 'TERMINATING', 'TERMINATED']);
  const at0 = session.getSnapshot().context.history.map((h) => Date.parse(h.at));
  assert.ok(at0.every((t, i) => i === 0 || t >= at0[i - 1]), 'history timestamps are in order');
});

test('PENDING_REASON in PENDING sets statusInfo and statusData; SCHEDULE clears them', async () => {
  const fx = kernelEffects({ awaitDurable: 'hold' });
  const input = sessionInput(1);
  const session = startSession(fx, input);
  session.send({ type: 'PENDING_REASON', reason: 'no-capacity', data: { needed: { cpu: '1' } } });
  assert.is(session.getSnapshot().value, 'PENDING');
  assert.is(session.getSnapshot().context.statusInfo, 'no-capacity');
  assert.equal(session.getSnapshot().context.statusData, { needed: { cpu: '1' } });
  session.send({ type: 'SCHEDULE', placements: placeAll(input) });
  await at(session, 'SCHEDULED');
  assert.is(session.getSnapshot().context.statusInfo, undefined);
  assert.is(session.getSnapshot().context.statusData, undefined);
});

test('a kernel report that changes nothing leaves the context as it was (each assign clones the snapshot)', () => {
  const session = startSession(kernelEffects(), sessionInput(1));
  const before = session.getSnapshot().context;
  session.send({ type: 'KERNEL_STATUS', kernelId: K0, status: 'PENDING' });
  assert.ok(session.getSnapshot().context === before, 'a repeated PENDING report made a new context');
  session.send({ type: 'KERNEL_STATUS', kernelId: K0, status: 'PENDING', statusInfo: 'changed' });
  assert.ok(session.getSnapshot().context !== before, 'a report with a new statusInfo is kept');
});

// ---- cancellation --------------------------------------------------------------------------------

for (const type of ['CANCEL', 'TERMINATE'] as const) {
  test(`${type} in PENDING → CANCELLED: kernels cancelled, no effect run`, async () => {
    const fx = kernelEffects();
    const session = startSession(fx, sessionInput(2));
    session.send({ type, reason: 'user-cancelled' });
    await done(session);
    const s = session.getSnapshot();
    assert.is(s.value, 'CANCELLED');
    assert.is(s.context.statusInfo, 'user-cancelled');
    assert.equal(statuses(s.context.history), ['PENDING', 'CANCELLED']);
    for (const id of [K0, K1]) assert.is(kernelOf(session, id).getSnapshot().value, 'CANCELLED');
    assert.is(Object.values(fx).reduce((n, e) => n + e.count(), 0), 0);
  });
}

test('CANCEL in SCHEDULED → CANCELLED, PREPARING never starts', async () => {
  const fx = kernelEffects({ awaitDurable: 'hold' });
  const input = sessionInput(1);
  const session = startSession(fx, input);
  session.send({ type: 'SCHEDULE', placements: placeAll(input) });
  await at(session, 'SCHEDULED');
  session.send({ type: 'CANCEL', reason: 'user-cancelled' });
  await done(session);
  assert.is(session.getSnapshot().value, 'CANCELLED');
  assert.equal(statuses(session.getSnapshot().context.history), ['PENDING', 'SCHEDULED', 'CANCELLED']);
  assertAllowedWalk(session.getSnapshot().context.history);
  assert.is(fx.prepareKernel.count(), 0);
});

test('termination asked while the kernels are still PENDING stays PENDING until they are cancelled', () => {
  const kernelViews = { [K0]: { status: 'PENDING', role: 'main' }, [K1]: { status: 'PENDING', role: 'sub' } } satisfies Record<string, KernelView>;
  const termination = { reason: 'user-cancelled', forced: false };
  assert.is(deriveSessionStatus({ kernelViews, termination }), 'PENDING');
  assert.is(deriveSessionStatus({ kernelViews: { ...kernelViews, [K0]: { status: 'CANCELLED', role: 'main' } }, termination }), 'PENDING');
  assert.is(deriveSessionStatus({ kernelViews: { [K0]: { status: 'CANCELLED', role: 'main' }, [K1]: { status: 'CANCELLED', role: 'sub' } }, termination }), 'CANCELLED');
});

// ---- RUNNING ⇄ RESTARTING ------------------------------------------------------------------------

test('RUNNING → RESTARTING on RESTART → RUNNING when every kernel is back', async () => {
  const { fx, session } = await running({ restartKernel: 'hold' }, 2);
  session.send({ type: 'RESTART' });
  await at(session, 'RESTARTING');
  assert.is(fx.restartKernel.count(), 2, 'every kernel restarts');
  fx.restartKernel.resolve(K0);
  await kernelAt(session, K0, 'RUNNING');
  await settle();
  assert.is(session.getSnapshot().value, 'RESTARTING', 'RESTARTING until the last kernel is back');
  fx.restartKernel.resolve(K1);
  await at(session, 'RUNNING');
  session.send({ type: 'RESTART' });
  await at(session, 'RESTARTING');
  fx.restartKernel.resolve();
  await at(session, 'RUNNING');
  const walk = statuses(session.getSnapshot().context.history);
  assert.equal(walk.slice(-5), ['RUNNING', 'RESTARTING', 'RUNNING', 'RESTARTING', 'RUNNING']);
  assertAllowedWalk(session.getSnapshot().context.history);
});

test('a failed restart → TERMINATING → ERROR (failed-to-restart)', async () => {
  const { session } = await running({ restartKernel: 'reject' });
  session.send({ type: 'RESTART' });
  await done(session);
  assert.is(session.getSnapshot().value, 'ERROR');
  assert.is(session.getSnapshot().context.statusInfo, 'failed-to-restart');
  assert.equal(statuses(session.getSnapshot().context.history).slice(-4), ['RUNNING', 'RESTARTING', 'TERMINATING', 'ERROR']);
  assertAllowedWalk(session.getSnapshot().context.history);
});

// ---- failures ------------------------------------------------------------------------------------

test('creation failure → TERMINATING → ERROR with failed-to-start', async () => {
  const fx = kernelEffects({ createKernel: 'hold', destroyKernel: 'hold' });
  const input = sessionInput(1);
  const session = startSession(fx, input);
  session.send({ type: 'SCHEDULE', placements: placeAll(input) });
  await kernelAt(session, K0, 'CREATING');
  fx.createKernel.reject(undefined, new Error('no such image'));
  await at(session, 'TERMINATING');
  assert.is(session.getSnapshot().context.statusInfo, 'failed-to-start');
  assert.is(session.getSnapshot().context.termination, undefined, 'nobody asked for termination');
  fx.destroyKernel.resolve();
  await done(session);
  const s = session.getSnapshot();
  assert.is(s.value, 'ERROR');
  assert.is(s.context.statusInfo, 'failed-to-start');
  assert.equal(statuses(s.context.history), ['PENDING', 'SCHEDULED', 'PREPARING', 'TERMINATING', 'ERROR']);
  assertAllowedWalk(s.context.history);
  assert.equal(kernelOf(session, K0).getSnapshot().context.statusData, { error: 'no such image' });
});

test('container exit with a non-zero code while RUNNING → ERROR, self-terminated (exit code 137), {exitCode} in statusData', async () => {
  const { session } = await running();
  session.send({ type: 'KERNEL_EXITED', kernelId: K0, exitCode: 137 });
  await done(session);
  const s = session.getSnapshot();
  assert.is(s.value, 'ERROR');
  assert.is(s.context.statusInfo, 'self-terminated (exit code 137)');
  assert.equal(s.context.statusData, { kernelId: K0, exitCode: 137 });
  assert.is(s.context.kernelViews[K0].exitCode, 137);
  assert.equal(kernelOf(session, K0).getSnapshot().context.statusData, { exitCode: 137 });
  assert.equal(statuses(s.context.history).slice(-3), ['RUNNING', 'TERMINATING', 'ERROR']);
  assert.is(s.context.history.at(-1)!.info, 'self-terminated (exit code 137)', 'the history entry carries the reason');
});

test('container exit with code 0 while RUNNING → TERMINATED', async () => {
  const { session } = await running();
  session.send({ type: 'KERNEL_EXITED', kernelId: K0, exitCode: 0 });
  await done(session);
  assert.is(session.getSnapshot().value, 'TERMINATED');
  assert.is(session.getSnapshot().context.statusInfo, 'self-terminated (exit code 0)');
  assert.equal(session.getSnapshot().context.statusData, { kernelId: K0, exitCode: 0 });
});

test('KERNEL_MISSING while RUNNING → TERMINATING → ERROR with the reason', async () => {
  const { session } = await running();
  session.send({ type: 'KERNEL_MISSING', kernelId: K0, reason: 'container-gone' });
  await done(session);
  assert.is(session.getSnapshot().value, 'ERROR');
  assert.is(session.getSnapshot().context.statusInfo, 'container-gone');
  assertAllowedWalk(session.getSnapshot().context.history);
});

test('events naming an unknown kernel are ignored', async () => {
  const { fx, session } = await running();
  const before = sessionFingerprint(session);
  for (const e of [
    { type: 'KERNEL_STATUS', kernelId: 'nope', status: 'ERROR', statusInfo: 'x' },
    { type: 'KERNEL_EXITED', kernelId: 'nope', exitCode: 1 },
    { type: 'KERNEL_MISSING', kernelId: 'nope', reason: 'x' },
    { type: 'KERNEL_DEADLINE', kernelId: 'nope', now: Number.MAX_SAFE_INTEGER },
  ] satisfies SessionEvent[]) {
    session.send(e);
    await settle();
  }
  assert.equal(sessionFingerprint(session), before);
  assert.is(fx.destroyKernel.count(), 0);
  assert.is(session.errors.length, 0);
});

// ---- deadlines -----------------------------------------------------------------------------------

for (const [kstatus, effect, info] of [['PREPARING', 'prepareKernel', 'preparing-timeout'], ['CREATING', 'createKernel', 'creating-timeout']] as const) {
  test(`KERNEL_DEADLINE past the kernel's ${kstatus} deadline → TERMINATING → ERROR (${info})`, async () => {
    const fx = kernelEffects({ [effect]: 'hold' });
    const input = sessionInput(1);
    const session = startSession(fx, input);
    session.send({ type: 'SCHEDULE', placements: placeAll(input) });
    await kernelAt(session, K0, kstatus);
    await at(session, 'PREPARING');
    const deadlineAt = kernelOf(session, K0).getSnapshot().context.deadlineAt!;
    session.send({ type: 'KERNEL_DEADLINE', kernelId: K0, now: deadlineAt + 1 });
    await done(session);
    assert.is(session.getSnapshot().value, 'ERROR');
    assert.is(session.getSnapshot().context.statusInfo, info);
    assert.equal(statuses(session.getSnapshot().context.history).slice(-3), ['PREPARING', 'TERMINATING', 'ERROR']);
  });

  test(`a stale KERNEL_DEADLINE (now < deadlineAt) in ${kstatus} is ignored`, async () => {
    const fx = kernelEffects({ [effect]: 'hold' });
    const input = sessionInput(1);
    const session = startSession(fx, input);
    session.send({ type: 'SCHEDULE', placements: placeAll(input) });
    await kernelAt(session, K0, kstatus);
    await at(session, 'PREPARING');
    const before = sessionFingerprint(session);
    session.send({ type: 'KERNEL_DEADLINE', kernelId: K0, now: before.kernels[K0].context.deadlineAt - 1 });
    await settle();
    assert.equal(sessionFingerprint(session), before);
    assert.is(fx[effect].pending(K0).length, 1);
  });
}

test('TERMINATING past its deadline is forced to TERMINATED after a requested termination', async () => {
  const { fx, session } = await running({ destroyKernel: 'hold' });
  session.send({ type: 'TERMINATE', reason: 'user-requested' });
  await at(session, 'TERMINATING');
  const deadlineAt = kernelOf(session, K0).getSnapshot().context.deadlineAt!;
  session.send({ type: 'KERNEL_DEADLINE', kernelId: K0, now: deadlineAt - 1 });
  await settle();
  assert.is(session.getSnapshot().value, 'TERMINATING', 'a stale deadline is ignored');
  session.send({ type: 'KERNEL_DEADLINE', kernelId: K0, now: deadlineAt });
  await done(session);
  assert.is(session.getSnapshot().value, 'TERMINATED');
  assert.equal(kernelOf(session, K0).getSnapshot().context.statusData, { forced: 'terminating-timeout' });
  assert.ok(fx.destroyKernel.calls[0].aborted);
});

test('TERMINATING past its deadline is forced to ERROR after a failure', async () => {
  const { session } = await running({ destroyKernel: 'hold' });
  session.send({ type: 'KERNEL_EXITED', kernelId: K0, exitCode: 137 });
  await at(session, 'TERMINATING');
  session.send({ type: 'KERNEL_DEADLINE', kernelId: K0, now: kernelOf(session, K0).getSnapshot().context.deadlineAt! });
  await done(session);
  assert.is(session.getSnapshot().value, 'ERROR');
  assert.is(session.getSnapshot().context.statusInfo, 'self-terminated (exit code 137)');
});

test('TERMINATE with forced: true reaches the kernels', async () => {
  const { session } = await running({ destroyKernel: 'hold' }, 2);
  session.send({ type: 'TERMINATE', reason: 'admin', forced: true });
  await at(session, 'TERMINATING');
  await kernelAt(session, K1, 'TERMINATING');
  for (const id of [K0, K1]) {
    assert.is(kernelOf(session, id).getSnapshot().context.forced, true);
    assert.is(kernelOf(session, id).getSnapshot().context.statusInfo, 'admin');
  }
});

test('a failing destroy is retried (1 s backoff, simulated clock) and then the session ends', async () => {
  const clock = new SimulatedClock();
  const { fx, session } = await running({ destroyKernel: 'hold' }, 1, { clock });
  session.send({ type: 'TERMINATE', reason: 'user-requested' });
  await at(session, 'TERMINATING');
  const kernel = kernelOf(session, K0);
  for (let i = 1; i <= 5; i++) {
    assert.is(fx.destroyKernel.reject(), 1);
    await waitFor(kernel, (s) => s.matches({ TERMINATING: 'backoff' }), { timeout: 2_000 });
    clock.increment(1_000);
    await waitFor(kernel, (s) => s.matches({ TERMINATING: 'destroying' }), { timeout: 2_000 });
    assert.is(fx.destroyKernel.count(), i + 1);
    assert.is(session.getSnapshot().value, 'TERMINATING');
  }
  fx.destroyKernel.reject(undefined, new Error('agent unreachable'));
  await done(session);
  assert.is(session.getSnapshot().value, 'TERMINATED');
  assert.is(fx.destroyKernel.count(), 6);
  assert.equal(kernel.getSnapshot().context.statusData, { destroyError: 'agent unreachable' });
});

// ---- clusters ------------------------------------------------------------------------------------

test('a 2-kernel session reaches RUNNING only when both kernels are RUNNING', async () => {
  const fx = kernelEffects();
  fx.createKernel.modes.set(K1, 'hold');
  const input = sessionInput(2);
  const session = startSession(fx, input);
  session.send({ type: 'SCHEDULE', placements: { [K0]: 'agent-1', [K1]: 'agent-2' } });
  await kernelAt(session, K0, 'RUNNING');
  await kernelAt(session, K1, 'CREATING');
  await settle();
  assert.is(session.getSnapshot().value, 'PREPARING');
  assert.is(kernelOf(session, K1).getSnapshot().context.agentId, 'agent-2');
  fx.createKernel.resolve(K1);
  await at(session, 'RUNNING');
  assert.equal(Object.values(session.getSnapshot().context.kernelViews).map((k) => k.status), ['RUNNING', 'RUNNING']);
  assert.equal(statuses(session.getSnapshot().context.history), ['PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING']);
});

test('a 2-kernel session: one kernel failing to start terminates the other and ends in ERROR', async () => {
  const fx = kernelEffects({ destroyKernel: 'hold' });
  fx.createKernel.modes.set(K1, 'hold');
  const input = sessionInput(2);
  const session = startSession(fx, input);
  session.send({ type: 'SCHEDULE', placements: placeAll(input) });
  await kernelAt(session, K0, 'RUNNING');
  await kernelAt(session, K1, 'CREATING');
  fx.createKernel.reject(K1, new Error('out of GPUs'));
  await at(session, 'TERMINATING');
  await kernelAt(session, K0, 'TERMINATING');
  assert.is(session.getSnapshot().context.statusInfo, `failed-to-start (${K1})`, "a sub-kernel's reason names it");
  assert.is(fx.destroyKernel.count(K0), 1, 'the healthy kernel is destroyed too');
  fx.destroyKernel.resolve();
  await done(session);
  const s = session.getSnapshot();
  assert.is(s.value, 'ERROR');
  assert.is(kernelOf(session, K0).getSnapshot().value, 'TERMINATED');
  assert.is(kernelOf(session, K1).getSnapshot().value, 'ERROR');
  assert.equal(statuses(s.context.history), ['PENDING', 'SCHEDULED', 'PREPARING', 'TERMINATING', 'ERROR']);
  assertAllowedWalk(s.context.history);
});

test('a 2-kernel session: a kernel still waiting in SCHEDULED is cancelled when the other fails', async () => {
  const fx = kernelEffects({ createKernel: 'reject' });
  fx.awaitDurable.modes.set(K1, 'hold');
  const input = sessionInput(2);
  const session = startSession(fx, input);
  session.send({ type: 'SCHEDULE', placements: placeAll(input) });
  await done(session);
  assert.is(session.getSnapshot().value, 'ERROR');
  assert.is(kernelOf(session, K1).getSnapshot().value, 'CANCELLED');
  assert.is(fx.prepareKernel.count(K1), 0);
});

test('a 2-kernel session: a sub-kernel exiting on its own leaves it RUNNING_DEGRADED, the main kernel running, the reason given', async () => {
  const { session } = await running({}, 2);
  session.send({ type: 'KERNEL_EXITED', kernelId: K1, exitCode: 137 });
  await at(session, 'RUNNING_DEGRADED');
  await waitFor(kernelOf(session, K1), (s) => s.status === 'done', { timeout: 2_000 });
  assert.is(session.getSnapshot().value, 'RUNNING_DEGRADED');
  assert.is(session.getSnapshot().context.statusInfo, `self-terminated (exit code 137) (${K1})`);
  assert.equal(session.getSnapshot().context.statusData, { kernelId: K1, exitCode: 137 });
  assert.is(kernelOf(session, K0).getSnapshot().value, 'RUNNING');
  // Ending it then ends the main kernel too, and the session TERMINATED (the lost sub was reported when it went).
  session.send({ type: 'TERMINATE', reason: 'user-requested' });
  await done(session);
  assert.is(kernelOf(session, K0).getSnapshot().value, 'TERMINATED');
  assert.is(session.getSnapshot().value, 'TERMINATED');
  assert.equal(session.getSnapshot().context.history.map((h) => h.status), ['PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING', 'RUNNING_DEGRADED', 'TERMINATING', 'TERMINATED']);
});

test('a 2-kernel session: the main kernel exiting on its own ends the session, sub TERMINATED', async () => {
  const { session } = await running({}, 2);
  session.send({ type: 'KERNEL_EXITED', kernelId: K0, exitCode: 137 });
  await done(session);
  assert.is(session.getSnapshot().value, 'ERROR');
  assert.is(kernelOf(session, K1).getSnapshot().value, 'TERMINATED');
});

// ---- restore -------------------------------------------------------------------------------------

test('restored from a JSON round-tripped snapshot in RUNNING: same status and kernel status, TERMINATE reaches TERMINATED', async () => {
  const fx = kernelEffects();
  const { session } = await running({}, 2);
  const persisted = session.getPersistedSnapshot();
  const before = session.getSnapshot();
  session.stop();

  const restored = restoreSession(fx, persisted);
  const s = restored.getSnapshot();
  assert.is(s.value, 'RUNNING');
  assert.equal(s.context, JSON.parse(JSON.stringify(before.context)));
  for (const id of [K0, K1]) {
    assert.is(kernelOf(restored, id).getSnapshot().value, 'RUNNING');
    assert.is(kernelOf(restored, id).getSnapshot().context.containerId, `container-${id}`);
  }
  assert.is(Object.values(fx).reduce((n, e) => n + e.count(), 0), 0, 'restoring a resting session runs no effect');

  restored.send({ type: 'TERMINATE', reason: 'user-requested' });
  await done(restored);
  assert.is(restored.getSnapshot().value, 'TERMINATED');
  assert.is(fx.destroyKernel.count(), 2);
  assert.equal(statuses(restored.getSnapshot().context.history), ['PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING', 'TERMINATING', 'TERMINATED']);
  assert.is(restored.errors.length, 0);
});

test('restored in PREPARING with prepareKernel in flight re-invokes prepareKernel (effects must be idempotent) and continues', async () => {
  const fx = kernelEffects({ prepareKernel: 'hold' });
  const input = sessionInput(1);
  const session = startSession(fx, input);
  session.send({ type: 'SCHEDULE', placements: placeAll(input) });
  await kernelAt(session, K0, 'PREPARING');
  await at(session, 'PREPARING');
  assert.is(fx.prepareKernel.count(), 1);
  const persisted = session.getPersistedSnapshot();
  const deadlineAt = kernelOf(session, K0).getSnapshot().context.deadlineAt;
  session.stop(); // the manager died with the effect in flight
  assert.ok(fx.prepareKernel.calls[0].aborted);

  const restored = restoreSession(fx, persisted);
  assert.is(restored.getSnapshot().value, 'PREPARING');
  assert.is(kernelOf(restored, K0).getSnapshot().value, 'PREPARING');
  assert.is(kernelOf(restored, K0).getSnapshot().context.deadlineAt, deadlineAt, 'the deadline timestamp survives');
  await settle();
  assert.is(fx.prepareKernel.count(), 2, 'the in-flight effect runs again on restore');
  assert.is(fx.prepareKernel.calls[1].kernelId, K0);
  assert.is(fx.awaitDurable.count(), 1, 'finished effects do not run again');

  fx.prepareKernel.resolve();
  await at(restored, 'RUNNING');
  assert.is(fx.createKernel.count(), 1);
  restored.send({ type: 'TERMINATE', reason: 'user-requested' });
  await done(restored);
  assert.is(restored.getSnapshot().value, 'TERMINATED');
  assert.equal(statuses(restored.getSnapshot().context.history), ['PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING', 'TERMINATING', 'TERMINATED']);
  assert.is(restored.errors.length, 0);
});

test('restored in TERMINATING with destroyKernel in flight re-invokes destroyKernel and ends', async () => {
  const fx = kernelEffects({ destroyKernel: 'hold' });
  const { session } = await running({ destroyKernel: 'hold' });
  session.send({ type: 'TERMINATE', reason: 'user-requested' });
  await at(session, 'TERMINATING');
  const persisted = session.getPersistedSnapshot();
  session.stop();
  const restored = restoreSession(fx, persisted);
  assert.is(restored.getSnapshot().value, 'TERMINATING');
  await settle();
  assert.is(fx.destroyKernel.count(), 1, 'the destroy runs again on restore');
  fx.destroyKernel.resolve();
  await done(restored);
  assert.is(restored.getSnapshot().value, 'TERMINATED');
});

// DESIGN.md §2: XState does not persist `after` timers. Guards TERMINATING.backoff being an
// invoked delay (re-run on restore) rather than an `after` timer: with `after`, a session
// restored during the backoff never retried the destroy.
test('restored during the destroy backoff, the destroy is retried (the backoff is not lost)', async () => {
  const { fx: before, session } = await running({ destroyKernel: 'hold' });
  session.send({ type: 'TERMINATE', reason: 'user-requested' });
  await at(session, 'TERMINATING');
  before.destroyKernel.reject();
  await waitFor(kernelOf(session, K0), (s) => s.matches({ TERMINATING: 'backoff' }), { timeout: 2_000 });
  const persisted = session.getPersistedSnapshot();
  session.stop(); // the manager died during the backoff

  const clock = new SimulatedClock();
  const fx = kernelEffects({ destroyKernel: 'hold' });
  const restored = restoreSession(fx, persisted, { clock });
  assert.ok(kernelOf(restored, K0).getSnapshot().matches({ TERMINATING: 'backoff' }));
  clock.increment(1_000);
  await settle();
  assert.is(fx.destroyKernel.count(), 1, 'the destroy is retried once the 1 s backoff has passed after restore');
});

// ---- deriveSessionStatus -------------------------------------------------------------------------

const views = (...ks: KernelStatus[]): Record<string, KernelView> =>
  Object.fromEntries(ks.map((status, i) => [`k${i}`, { status, role: i === 0 ? 'main' : 'sub' } satisfies KernelView]));
const asked = { reason: 'user-requested', forced: false };

const DERIVE_CASES: [string, KernelStatus[], boolean, SessionStatus][] = [
  ['a new kernel', ['PENDING'], false, 'PENDING'],
  ['all pending', ['PENDING', 'PENDING'], false, 'PENDING'],
  ['one scheduled', ['SCHEDULED'], false, 'SCHEDULED'],
  ['one scheduled, one pending', ['SCHEDULED', 'PENDING'], false, 'SCHEDULED'],
  ['one preparing', ['PREPARING'], false, 'PREPARING'],
  ['one creating', ['CREATING'], false, 'PREPARING'],
  ['one running, one creating', ['RUNNING', 'CREATING'], false, 'PREPARING'],
  ['one running, one scheduled', ['RUNNING', 'SCHEDULED'], false, 'PREPARING'],
  ['one preparing, one scheduled', ['PREPARING', 'SCHEDULED'], false, 'PREPARING'],
  ['all running', ['RUNNING', 'RUNNING', 'RUNNING'], false, 'RUNNING'],
  ['one restarting', ['RESTARTING', 'RUNNING'], false, 'RESTARTING'],
  ['one terminating, one running', ['TERMINATING', 'RUNNING'], false, 'TERMINATING'],
  ['one error while others running', ['RUNNING', 'ERROR', 'RUNNING'], false, 'TERMINATING'],
  ['one terminated while one running', ['TERMINATED', 'RUNNING'], false, 'TERMINATING'],
  ['one cancelled while one running', ['CANCELLED', 'RUNNING'], false, 'TERMINATING'],
  ['termination asked, kernels running', ['RUNNING', 'RUNNING'], true, 'TERMINATING'],
  ['termination asked, one terminating one scheduled', ['TERMINATING', 'SCHEDULED'], true, 'TERMINATING'],
  ['all final, one error', ['TERMINATED', 'ERROR', 'CANCELLED'], false, 'ERROR'],
  ['all error', ['ERROR', 'ERROR'], true, 'ERROR'],
  ['all terminated', ['TERMINATED', 'TERMINATED'], true, 'TERMINATED'],
  ['terminated and cancelled', ['TERMINATED', 'CANCELLED'], false, 'TERMINATED'],
  ['all cancelled', ['CANCELLED', 'CANCELLED'], true, 'CANCELLED'],
  ['termination asked while all pending', ['PENDING', 'PENDING'], true, 'PENDING'],
  ['termination asked, one cancelled, one pending', ['CANCELLED', 'PENDING'], true, 'PENDING'],
  ['termination asked while scheduled', ['SCHEDULED', 'SCHEDULED'], true, 'SCHEDULED'],
  ['termination asked, one cancelled, one scheduled', ['CANCELLED', 'SCHEDULED'], true, 'SCHEDULED'],
];

test('deriveSessionStatus: table of kernel mixes', () => {
  for (const [name, ks, terminating, expected] of DERIVE_CASES) {
    const ctx = { kernelViews: views(...ks), ...(terminating ? { termination: asked } : {}) };
    assert.is(deriveSessionStatus(ctx), expected, `${name}: [${ks.join(', ')}]${terminating ? ' + termination' : ''}`);
  }
});

test('deriveSessionStatus is pure: same answer twice, input untouched', () => {
  const ctx = Object.freeze({ kernelViews: Object.freeze(views('RUNNING', 'CREATING')), termination: Object.freeze({ ...asked }) });
  const copy = JSON.parse(JSON.stringify(ctx));
  assert.is(deriveSessionStatus(ctx), 'TERMINATING');
  assert.is(deriveSessionStatus(ctx), 'TERMINATING');
  assert.equal(JSON.parse(JSON.stringify(ctx)), copy);
});

test('deriveSessionStatus: RUNNING_DEGRADED only for a session that ran and lost a sub-kernel on its own', () => {
  const ran = [{ status: 'RUNNING' as const, at: '2026-01-01T00:00:00.000Z' }];
  assert.is(deriveSessionStatus({ kernelViews: views('RUNNING', 'ERROR', 'RUNNING'), history: ran }), 'RUNNING_DEGRADED');
  assert.is(deriveSessionStatus({ kernelViews: views('RUNNING', 'TERMINATING'), history: ran }), 'RUNNING_DEGRADED', 'a sub ending on its own');
  assert.is(deriveSessionStatus({ kernelViews: views('RUNNING', 'TERMINATED', 'RUNNING'), history: ran }), 'RUNNING_DEGRADED');
  assert.is(deriveSessionStatus({ kernelViews: views('ERROR', 'RUNNING'), history: ran }), 'TERMINATING', 'the main kernel lost ends the session');
  assert.is(deriveSessionStatus({ kernelViews: views('RUNNING', 'ERROR'), history: ran, termination: asked }), 'TERMINATING', 'termination asked');
  assert.is(deriveSessionStatus({ kernelViews: views('RUNNING', 'ERROR', 'RESTARTING'), history: ran }), 'RESTARTING');
  // Without a RUNNING in its history (creation failing) no kernel mix reaches it.
  const seen = new Set<SessionStatus>();
  for (const a of KERNEL_STATUSES) for (const b of KERNEL_STATUSES) for (const t of [false, true]) {
    seen.add(deriveSessionStatus({ kernelViews: views(a, b), ...(t ? { termination: asked } : {}) }));
  }
  assert.not.ok(seen.has('RUNNING_DEGRADED'));
  assert.equal([...seen].sort(), SESSION_STATUSES.filter((s) => s !== 'RUNNING_DEGRADED').sort(), 'every other status is derivable');
});

// ---- random walks --------------------------------------------------------------------------------

/** A small deterministic PRNG, so a failing walk can be replayed from its seed. */
function prng(seed: number) {
  let x = seed;
  const next = () => { x = (x * 1103515245 + 12345) & 0x7fffffff; return x / 0x7fffffff; };
  return { next, pick: <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)] };
}

test('random walks (seeded): the session always rests at its derived status, views match kernels, every step is allowed, and it always ends', async () => {
  const effects: EffectName[] = ['awaitDurable', 'prepareKernel', 'createKernel', 'restartKernel', 'destroyKernel'];
  const rand = prng(20240607);
  for (let run = 0; run < 300; run++) {
    const clock = new SimulatedClock();
    const fx = kernelEffects(Object.fromEntries(effects.map((e) => [e, 'hold'])));
    const nk = rand.next() < 0.5 ? 1 : 2;
    const ids = [K0, K1].slice(0, nk);
    const input = sessionInput(nk);
    let session = startSession(fx, input, { clock });
    const trace: string[] = [];
    const where = () => `run ${run}:\n${trace.join('\n')}`;
    for (let step = 0; step < 40 && session.getSnapshot().status === 'active'; step++) {
      const r = rand.next();
      const kid = rand.pick(ids);
      if (r < 0.35) {
        const e = rand.pick<SessionEvent>([
          { type: 'SCHEDULE', placements: rand.next() < 0.7 ? placeAll(input) : { [kid]: 'agent-1' } },
          { type: 'PENDING_REASON', reason: 'no-capacity' },
          { type: 'CANCEL', reason: 'user-cancelled' },
          { type: 'TERMINATE', reason: 'user-requested', forced: rand.next() < 0.5 },
          { type: 'RESTART' },
          { type: 'KERNEL_EXITED', kernelId: kid, exitCode: rand.next() < 0.5 ? 0 : 137 },
          { type: 'KERNEL_MISSING', kernelId: kid, reason: 'container-gone' },
          { type: 'KERNEL_DEADLINE', kernelId: kid, now: Number.MAX_SAFE_INTEGER },
        ]);
        trace.push(JSON.stringify(e));
        session.send(e);
      } else if (r < 0.9) {
        const name = rand.pick(effects);
        // awaitDurable only ever succeeds here: its failure is the known bug tested in kernel-machine.
        const ok = name === 'awaitDurable' || rand.next() < 0.75;
        trace.push(`${ok ? 'resolve' : 'reject'} ${name} ${kid}`);
        if (ok) fx[name].resolve(kid); else fx[name].reject(kid);
      } else if (r < 0.95) {
        trace.push('clock +1 s');
        clock.increment(1_000);
      } else {
        trace.push('persist, stop, restore');
        const persisted = session.getPersistedSnapshot();
        session.stop();
        session = restoreSession(fx, persisted, { clock });
      }
      await settle(4);
      const s = session.getSnapshot();
      assert.is(session.errors.length, 0, `actor error: ${String(session.errors[0])} in ${where()}`);
      assertAllowedWalk(s.context.history);
      if (s.status !== 'active') break;
      assert.is(s.value, deriveSessionStatus(s.context), `not at its derived status after ${where()}`);
      for (const id of ids) {
        const v = kernelOf(session, id).getSnapshot().value;
        assert.is(typeof v === 'string' ? v : Object.keys(v)[0], s.context.kernelViews[id].status, `view of ${id} after ${where()}`);
      }
    }
    // Whatever happened, asking for the end (and letting every effect and deadline pass) ends it.
    for (let i = 0; i < 10 && session.getSnapshot().status === 'active'; i++) {
      session.send({ type: 'CANCEL', reason: 'drain' });
      session.send({ type: 'TERMINATE', reason: 'drain' });
      for (const e of effects) fx[e].resolve();
      for (const id of ids) session.send({ type: 'KERNEL_DEADLINE', kernelId: id, now: Number.MAX_SAFE_INTEGER });
      clock.increment(1_000);
      await settle(4);
    }
    assert.is(session.getSnapshot().status, 'done', `never ended: ${where()}`);
    assert.ok(['TERMINATED', 'ERROR', 'CANCELLED'].includes(session.getSnapshot().value));
    stopAll();
  }
});

// ---- every other event is refused ----------------------------------------------------------------

const SESSION_EVENT_SAMPLES = {
  SCHEDULE: { type: 'SCHEDULE', placements: { [K0]: 'agent-other' } },
  PENDING_REASON: { type: 'PENDING_REASON', reason: 'stray-reason', data: { x: 1 } },
  CANCEL: { type: 'CANCEL', reason: 'stray-cancel' },
  TERMINATE: { type: 'TERMINATE', reason: 'stray-terminate', forced: true },
  RESTART: { type: 'RESTART' },
  KERNEL_STATUS: { type: 'KERNEL_STATUS', kernelId: K0, status: 'ERROR', statusInfo: 'stray-status', exitCode: 9 },
  KERNEL_EXITED: { type: 'KERNEL_EXITED', kernelId: K0, exitCode: 137 },
  KERNEL_MISSING: { type: 'KERNEL_MISSING', kernelId: K0, reason: 'stray-missing' },
  // Long past any deadline: a state that took it would act on it.
  KERNEL_DEADLINE: { type: 'KERNEL_DEADLINE', kernelId: K0, now: Number.MAX_SAFE_INTEGER },
} satisfies { [T in SessionEvent['type']]: Extract<SessionEvent, { type: T }> };
const SESSION_EVENT_TYPES = Object.keys(SESSION_EVENT_SAMPLES) as SessionEvent['type'][];

test("the chart's `on` config is SESSION_ACCEPTS (KERNEL_STATUS is taken at the root, by every live status)", () => {
  const root = sessionMachine.root;
  assert.equal(Object.keys(root.config.on ?? {}), ['KERNEL_STATUS']);
  for (const status of SESSION_STATUSES) {
    const own = Object.keys(root.states[status].config.on ?? {});
    assert.equal(own.sort(), SESSION_ACCEPTS[status].filter((t) => t !== 'KERNEL_STATUS').sort(), status);
    const final = SESSION_TRANSITIONS[status].length === 0;
    assert.is(root.states[status].type === 'final', final, `${status} is final iff it has no transitions`);
    assert.is(SESSION_ACCEPTS[status].includes('KERNEL_STATUS'), !final, `${status} takes KERNEL_STATUS iff it is live`);
  }
});

/** Take a one-kernel session to a status and leave it resting there. */
async function reachSession(status: SessionStatus) {
  const modes: Partial<Record<EffectName, Mode>> = ({
    SCHEDULED: { awaitDurable: 'hold' },
    PREPARING: { prepareKernel: 'hold' },
    RESTARTING: { restartKernel: 'hold' },
    TERMINATING: { destroyKernel: 'hold' },
  } as Partial<Record<SessionStatus, Partial<Record<EffectName, Mode>>>>)[status] ?? {};
  const fx = kernelEffects(modes);
  const input = sessionInput(status === 'RUNNING_DEGRADED' ? 2 : 1);
  const session = startSession(fx, input);
  const schedule = () => session.send({ type: 'SCHEDULE', placements: placeAll(input) });
  switch (status) {
    case 'RUNNING_DEGRADED': schedule(); await at(session, 'RUNNING'); session.send({ type: 'KERNEL_EXITED', kernelId: K1, exitCode: 1 }); break;
    case 'PENDING': break;
    case 'CANCELLED': session.send({ type: 'CANCEL', reason: 'user-cancelled' }); break;
    case 'SCHEDULED': case 'PREPARING': case 'RUNNING': schedule(); break;
    case 'RESTARTING': schedule(); await at(session, 'RUNNING'); session.send({ type: 'RESTART' }); break;
    case 'TERMINATING': case 'TERMINATED': schedule(); await at(session, 'RUNNING'); session.send({ type: 'TERMINATE', reason: 'user-requested' }); break;
    case 'ERROR': schedule(); await at(session, 'RUNNING'); session.send({ type: 'KERNEL_EXITED', kernelId: K0, exitCode: 1 }); break;
    default: throw new Error(`no walk reaches ${status}`);
  }
  await at(session, status);
  await settle();
  assert.is(session.getSnapshot().value, status);
  return { fx, session };
}

for (const status of SESSION_STATUSES) {
  const refused = SESSION_EVENT_TYPES.filter((t) => !SESSION_ACCEPTS[status].includes(t));
  test(`${status} refuses ${refused.join(', ') || 'nothing'}: value, context, kernels and effects unchanged`, async () => {
    const { fx, session } = await reachSession(status);
    const counts = () => Object.values(fx).map((e: KernelEffects[EffectName]) => e.count());
    const before = sessionFingerprint(session);
    const callsBefore = counts();
    for (const type of refused) {
      session.send(SESSION_EVENT_SAMPLES[type]);
      await settle();
      const after = sessionFingerprint(session);
      assert.equal(after, before, `${status} changed on ${type}`);
      assert.is((after.context as SessionContext).history.length, before.context.history.length);
      assert.equal(counts(), callsBefore, `${status} ran an effect on ${type}`);
    }
    assert.is(session.errors.length, 0);
  });
}

test.run();
