// Test doubles for the statecharts: effects the test controls (resolve / reject / hold, counted
// per kernel), a parent harness that receives a kernel's KERNEL_STATUS reports, inputs with
// short deadlines, and snapshot fingerprints for "nothing changed" assertions.
import { assign, createActor, fromPromise, setup, type ActorOptions, type ActorRefFrom, type AnyActorRef } from 'xstate';
import { kernelMachine, type CreatedKernel, type KernelDeadlines, type KernelEffectInput, type KernelInput } from '../../actors/kernel.ts';
import { sessionMachine, type SessionInput } from '../../actors/session.ts';
import type { KernelStatus } from '../../schema/status.ts';

/** What an effect does when it is invoked: settle at once, or wait for the test. */
export type Mode = 'resolve' | 'reject' | 'hold';

export interface EffectCall<T> {
  kernelId: string;
  input: KernelEffectInput;
  settled: boolean;
  /** The invoking state was left (or the actor stopped) before the call settled. */
  aborted: boolean;
  resolve(value?: T): void;
  reject(error?: unknown): void;
}

export class Effect<T> {
  readonly calls: EffectCall<T>[] = [];
  /** Per-kernel mode, overriding `mode`. */
  readonly modes = new Map<string, Mode>();
  readonly logic;

  constructor(readonly name: string, private readonly output: (input: KernelEffectInput) => T, public mode: Mode = 'resolve') {
    this.logic = fromPromise<T, KernelEffectInput>(({ input, signal }) => new Promise<T>((res, rej) => {
      const call: EffectCall<T> = {
        kernelId: input.kernel.kernelId,
        input,
        settled: false,
        aborted: false,
        resolve: (value) => { if (call.settled) return; call.settled = true; res(value ?? this.output(input)); },
        reject: (error) => { if (call.settled) return; call.settled = true; rej(error ?? new Error(`${name} failed`)); },
      };
      signal.addEventListener('abort', () => { call.aborted = true; });
      this.calls.push(call);
      const mode = this.modes.get(call.kernelId) ?? this.mode;
      if (mode === 'resolve') call.resolve();
      else if (mode === 'reject') call.reject();
    }));
  }

  /** How many times the effect was invoked (for one kernel, or all). */
  count(kernelId?: string): number {
    return this.calls.filter((c) => kernelId === undefined || c.kernelId === kernelId).length;
  }

  /** Calls still waiting for the test (not settled, invoking state not left). */
  pending(kernelId?: string): EffectCall<T>[] {
    return this.calls.filter((c) => !c.settled && !c.aborted && (kernelId === undefined || c.kernelId === kernelId));
  }

  /** Settle every pending call (of one kernel, or all); returns how many were settled. */
  resolve(kernelId?: string): number {
    const ps = this.pending(kernelId);
    for (const c of ps) c.resolve();
    return ps.length;
  }

  reject(kernelId?: string, error: unknown = new Error(`${this.name} failed`)): number {
    const ps = this.pending(kernelId);
    for (const c of ps) c.reject(error);
    return ps.length;
  }
}

export type EffectName = 'awaitDurable' | 'prepareKernel' | 'createKernel' | 'restartKernel' | 'destroyKernel';

export function kernelEffects(modes: Partial<Record<EffectName, Mode>> = {}) {
  return {
    awaitDurable: new Effect<void>('awaitDurable', () => undefined, modes.awaitDurable),
    prepareKernel: new Effect<void>('prepareKernel', () => undefined, modes.prepareKernel),
    createKernel: new Effect<CreatedKernel>('createKernel', ({ kernel }) => ({ containerId: `container-${kernel.kernelId}` }), modes.createKernel),
    restartKernel: new Effect<void>('restartKernel', () => undefined, modes.restartKernel),
    destroyKernel: new Effect<void>('destroyKernel', () => undefined, modes.destroyKernel),
  };
}
export type KernelEffects = ReturnType<typeof kernelEffects>;

export function provideKernel(fx: KernelEffects) {
  return kernelMachine.provide({
    actors: {
      awaitDurable: fx.awaitDurable.logic,
      prepareKernel: fx.prepareKernel.logic,
      createKernel: fx.createKernel.logic,
      restartKernel: fx.restartKernel.logic,
      destroyKernel: fx.destroyKernel.logic,
    },
  });
}

export function provideSession(fx: KernelEffects) {
  return sessionMachine.provide({ actors: { kernel: provideKernel(fx) } });
}

export type KernelRef = ActorRefFrom<typeof kernelMachine>;
export type SessionRef = ActorRefFrom<typeof sessionMachine>;

// ---- inputs -----------------------------------------------------------------------------------

export const SHORT_DEADLINES: KernelDeadlines = { preparingMs: 50, creatingMs: 50, terminatingMs: 50 };

export function kernelInput(idx = 0, over: Partial<KernelInput> = {}): KernelInput {
  const sessionId = over.sessionId ?? 'sess-1';
  return {
    kernelId: `${sessionId}-k${idx}`,
    sessionId,
    role: idx === 0 ? 'main' : 'sub',
    idx,
    hostname: idx === 0 ? 'main1' : `sub${idx}`,
    image: 'cr.example/python:3.12',
    requestedSlots: { cpu: '1', mem: '1073741824' },
    deadlines: SHORT_DEADLINES,
    ...over,
  };
}

export function sessionInput(kernelCount = 1, over: Partial<SessionInput> = {}): SessionInput {
  const sessionId = over.sessionId ?? 'sess-1';
  return {
    sessionId,
    name: 'test-session',
    accessKey: 'AKIATEST',
    image: 'cr.example/python:3.12',
    type: 'interactive',
    clusterMode: kernelCount > 1 ? 'multi-node' : 'single-node',
    resourceGroup: 'default',
    requestedSlots: { cpu: String(kernelCount), mem: String(kernelCount * 1073741824) },
    kernels: Array.from({ length: kernelCount }, (_, i) => kernelInput(i, { sessionId })),
    ...over,
  };
}

/** Placements for SCHEDULE: every kernel of the input on one agent. */
export const placeAll = (input: SessionInput, agentId = 'agent-1') =>
  Object.fromEntries(input.kernels.map((k) => [k.kernelId, agentId]));

// ---- actors -----------------------------------------------------------------------------------

/** Every actor a test starts, so the suite can stop them after each test. */
const started = new Set<AnyActorRef>();
export function stopAll(): void {
  for (const a of started) a.stop();
  started.clear();
}

/** Fails the test on an actor error instead of letting XState throw it as uncaught. */
export interface Watched { errors: unknown[] }

function watch<A extends AnyActorRef>(actor: A): A & Watched {
  const w = actor as A & Watched;
  w.errors = [];
  actor.subscribe({ error: (e: unknown) => { w.errors.push(e); } });
  started.add(actor);
  return w;
}

export function startSession(fx: KernelEffects, input: SessionInput, opts: ActorOptions<ReturnType<typeof provideSession>> = {}) {
  const actor = watch(createActor(provideSession(fx), { input, ...opts }));
  actor.start();
  return actor;
}

/** Restore a session from a (JSON round-tripped) persisted snapshot. */
export function restoreSession(fx: KernelEffects, persisted: unknown, opts: Omit<ActorOptions<ReturnType<typeof provideSession>>, 'snapshot' | 'input'> = {}) {
  const snapshot = JSON.parse(JSON.stringify(persisted));
  // A restored actor takes no input: its context comes from the snapshot.
  const actor = watch(createActor(provideSession(fx), { ...opts, snapshot } as ActorOptions<ReturnType<typeof provideSession>> & { input: SessionInput }));
  actor.start();
  return actor;
}

export function kernelOf(session: SessionRef, kernelId: string): KernelRef {
  const ref = (session.getSnapshot().children as Record<string, KernelRef | undefined>)[kernelId];
  if (!ref) throw new Error(`session has no kernel child ${kernelId}`);
  return ref;
}

export interface KernelReport { type: 'KERNEL_STATUS'; kernelId: string; status: KernelStatus; statusInfo?: string; exitCode?: number }

/** A parent for a lone kernel: it invokes the kernel and keeps every KERNEL_STATUS it reports. */
export function kernelHarness(fx: KernelEffects, input: KernelInput) {
  return setup({
    types: {} as { context: { reports: KernelReport[] }; events: KernelReport },
    actors: { kernel: provideKernel(fx) },
  }).createMachine({
    id: 'harness',
    context: { reports: [] },
    invoke: { id: 'kernel', src: 'kernel', input },
    on: { KERNEL_STATUS: { actions: assign({ reports: ({ context, event }) => [...context.reports, event] }) } },
  });
}

export function startKernel(fx: KernelEffects, input: KernelInput = kernelInput(), opts: ActorOptions<ReturnType<typeof kernelHarness>> = {}) {
  const harness = watch(createActor(kernelHarness(fx, input), opts));
  harness.start();
  const kernel = (harness.getSnapshot().children as Record<string, KernelRef | undefined>).kernel;
  if (!kernel) throw new Error('harness did not start the kernel');
  return { harness, kernel, reports: () => harness.getSnapshot().context.reports };
}

/** Let promise effects that settle at once, and the events they cause, run. */
export async function settle(rounds = 3): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

/** What must not change when an event is refused: value, status, context, and the kernels'. */
export function sessionFingerprint(session: SessionRef) {
  const s = session.getSnapshot();
  const kernels = Object.fromEntries(Object.keys(s.context.kernelViews).map((id) => {
    const k = kernelOf(session, id).getSnapshot();
    return [id, { value: k.value, status: k.status, context: k.context }];
  }));
  return JSON.parse(JSON.stringify({ value: s.value, status: s.status, context: s.context, kernels }));
}

export function kernelFingerprint(kernel: KernelRef) {
  const s = kernel.getSnapshot();
  return JSON.parse(JSON.stringify({ value: s.value, status: s.status, context: s.context }));
}

export const statuses = (history: { status: string }[]) => history.map((h) => h.status);
