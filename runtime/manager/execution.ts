// Code execution in a session's main kernel (API.md "Execute"): query, batch, continue and
// input, relayed to the agent, whose reply comes within ~2 s (`continued` for long runs, the
// client polls with `continue`), and interrupt. Counts queries and activity for idle checks.
import { randomUUID } from 'node:crypto';
import { isExecuteReply, type ConsoleChunk, type ExecuteReply } from '../../schema/agent-rpc.ts';
import { Conflict, InvalidAPIParameters, ServiceUnavailable } from '../../schema/errors.ts';
import type { KernelContext } from '../../actors/kernel.ts';
import type { Logger } from '../log.ts';
import type { Database } from '../stores/types.ts';
import { RpcError, untilAnswered, type AgentRegistry } from './agents.ts';
import type { SessionRow } from './sessions.ts';
import type { Supervisor } from './supervisor.ts';
import { acceptsCode } from '../../schema/status.ts';

export interface ExecuteBody { mode: 'query' | 'batch' | 'continue' | 'input'; code: string; runId: string | null; options: Record<string, unknown> }

/** The agent answers within its flush interval; this bounds a lost answer. */
const EXECUTE_RPC_TIMEOUT_MS = 15_000;
/** How long, and for how many runs, an answer the client never received waits for its next continue. */
const UNDELIVERED_KEEP_MS = 10 * 60_000;
const UNDELIVERED_MAX_RUNS = 1000;

/** Output of a run as the manager receives it, for live watchers of the session. */
export interface RunOutput { sessionId: string; sessionName: string; ownerAccessKey: string; kernelId: string; runId: string; console: ConsoleChunk[]; status: ExecuteReply['status']; exitCode: number | null }

export class ExecutionService {
  constructor(private readonly deps: { db: Database; agents: AgentRegistry; supervisor: Supervisor; log: Logger; onOutput?: (o: RunOutput) => void }) {}

  private async mainKernel(row: SessionRow): Promise<{ id: string; agent_id: string }> {
    if (!acceptsCode(row.status)) throw new Conflict(`the session is ${row.status}, not RUNNING`);
    // The live actor knows its main kernel's placement: no query on the hot path.
    const live = this.deps.supervisor.snapshot(row.id);
    if (live) {
      const main = live.context.kernels.find((k) => k.role === 'main');
      const ref = main && (live.children as Record<string, { getSnapshot(): { context: KernelContext } } | undefined>)[main.kernelId];
      const agentId = ref?.getSnapshot().context.agentId;
      if (main && agentId) return { id: main.kernelId, agent_id: agentId };
    }
    const k = (await this.deps.db.query<{ id: string; agent_id: string | null }>(
      `SELECT id, agent_id FROM kernels WHERE session_id = $1 AND cluster_role = 'main'`, [row.id])).rows[0];
    if (!k?.agent_id) throw new Conflict('the session has no running main kernel');
    return { id: k.id, agent_id: k.agent_id };
  }

  /**
   * Answers the agent gave that never reached their HTTP client, by run: the agent acknowledged
   * that output to the runner when it answered, so this is its only copy. The run's next
   * `continue` (or `input`) gets it first.
   */
  private readonly held = new Map<string, { reply: ExecuteReply; until: number }>();

  /** Keep an answer whose client went away before receiving it, for the run's next poll. */
  undelivered(reply: ExecuteReply): void {
    if (!reply.console.length && reply.status === 'continued') return;
    const now = Date.now();
    for (const [runId, h] of this.held) if (h.until < now || this.held.size >= UNDELIVERED_MAX_RUNS) this.held.delete(runId);
    const before = this.held.get(reply.runId)?.reply;
    this.held.set(reply.runId, { reply: before ? { ...reply, console: [...before.console, ...reply.console] } : reply, until: now + UNDELIVERED_KEEP_MS });
    this.deps.log.warn({ runId: reply.runId, chunks: reply.console.length, status: reply.status }, 'an execute answer did not reach its client: kept for its next continue');
  }

  /** Relay one execute request; the reply's console is the agent's (JSON string bodies): resultJson makes the API's answer of it. */
  async execute(row: SessionRow, body: ExecuteBody, flushMs?: number): Promise<ExecuteReply> {
    const held = body.runId && (body.mode === 'continue' || body.mode === 'input') ? this.held.get(body.runId) : undefined;
    if (!held) return this.relay(row, body, flushMs);
    this.held.delete(body.runId!);
    // The run ended (or waits for input) in the answer that was lost: that answer is the next one.
    if (held.reply.status !== 'continued' && body.mode === 'continue') return held.reply;
    try {
      const next = await this.relay(row, body, flushMs);
      return { ...next, console: [...held.reply.console, ...next.console] };
    } catch (e) {
      this.held.set(body.runId!, held); // not lost with this failure either
      throw e;
    }
  }

  private async relay(row: SessionRow, body: ExecuteBody, flushMs?: number): Promise<ExecuteReply> {
    const k = await this.mainKernel(row);
    const starts = body.mode === 'query' || body.mode === 'batch';
    if (!starts && !body.runId) throw new InvalidAPIParameters(`runId is required with mode ${body.mode}`);
    const runId = body.runId ?? randomUUID().replace(/-/g, '');
    const o = body.options ?? {};
    const timeoutS = Number(o.exec_timeout ?? o.execTimeout ?? o.timeout ?? 0);
    if (!Number.isFinite(timeoutS) || timeoutS < 0) throw new InvalidAPIParameters('options.exec_timeout: seconds, a non-negative number');
    if (body.mode === 'batch' && typeof o.exec !== 'string' && !body.code) throw new InvalidAPIParameters('batch mode needs options.exec (or code)');
    try {
      const ask = (ms: number) => this.deps.agents.call(k.agent_id, 'execute', {
        kernelId: k.id, runId, mode: body.mode, code: body.code ?? '',
        ...(body.mode === 'batch' ? { build: typeof o.build === 'string' ? o.build : null, exec: typeof o.exec === 'string' ? o.exec : body.code } : {}),
        ...(timeoutS > 0 ? { timeoutMs: Math.round(timeoutS * 1000) } : {}),
        ...(flushMs ? { flushMs } : {}),
      }, ms);
      // A continue is safe to ask again of an agent that restarted meanwhile (its runner replays
      // what was never acknowledged); starting code or feeding input is not.
      const reply = body.mode === 'continue' ? await untilAnswered(EXECUTE_RPC_TIMEOUT_MS, ask) : await ask(EXECUTE_RPC_TIMEOUT_MS);
      if (!isExecuteReply(reply)) throw new ServiceUnavailable(`agent ${k.agent_id} sent a malformed execute reply`);
      // Only a call the agent accepted is activity (a refused one changes nothing).
      this.noteActivity(row.id, starts);
      if (reply.console.length || reply.status !== 'continued') {
        this.deps.onOutput?.({ sessionId: row.id, sessionName: row.name, ownerAccessKey: row.access_key, kernelId: k.id, runId: reply.runId, console: reply.console, status: reply.status, exitCode: reply.exitCode });
      }
      return reply;
    } catch (e) {
      throw mapRpcError(e);
    }
  }

  /**
   * Count the query and stamp the activity for idle checks, without holding up the reply (a
   * commit per call would double the round trip); continue polls stamp at most once a second.
   */
  private readonly stamped = new Map<string, number>();
  private noteActivity(sessionId: string, query: boolean): void {
    const now = Date.now();
    if (!query && now - (this.stamped.get(sessionId) ?? 0) < 1000) return;
    this.stamped.set(sessionId, now);
    if (this.stamped.size > 10_000) this.stamped.clear();
    this.deps.db.query(
      query ? `UPDATE sessions SET num_queries = num_queries + 1, last_activity_at = now() WHERE id = $1` : `UPDATE sessions SET last_activity_at = now() WHERE id = $1`,
      [sessionId],
    ).catch((err: Error) => this.deps.log.warn({ sessionId, err: err.message }, 'activity not recorded'));
  }

  /** Clients attached to a session's execute stream: such a session is not idle. */
  private readonly streams = new Map<string, number>();
  /** Count a client attached to the session until the returned function is called. */
  attach(sessionId: string): () => void {
    this.streams.set(sessionId, (this.streams.get(sessionId) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.streams.get(sessionId) ?? 1) - 1;
      if (n > 0) this.streams.set(sessionId, n); else this.streams.delete(sessionId);
    };
  }
  isAttached(sessionId: string): boolean { return this.streams.has(sessionId); }

  async interrupt(row: SessionRow): Promise<void> {
    const k = await this.mainKernel(row);
    try {
      await this.deps.agents.call(k.agent_id, 'interrupt', { kernelId: k.id });
    } catch (e) { throw mapRpcError(e); }
  }
}

/**
 * API.md's execute result as JSON bytes: `{"result": {...}}` (HTTP) or the bare result (a
 * WebSocket frame). The console bodies go in as the agent sent them, neither decoded nor escaped again.
 */
export function resultJson(r: ExecuteReply, wrap: boolean): Buffer {
  const parts: Buffer[] = [Buffer.from(`${wrap ? '{"result":' : ''}{"runId":${JSON.stringify(r.runId)},"status":${JSON.stringify(r.status)},"exitCode":${JSON.stringify(r.exitCode)},"console":[`)];
  r.console.forEach(([stream, json], i) => parts.push(Buffer.from(`${i ? ',' : ''}["${stream}","`), json, ITEM_END));
  parts.push(Buffer.from(`],"options":{},"files":[]}${wrap ? '}' : ''}`));
  return Buffer.concat(parts);
}
const ITEM_END = Buffer.from('"]');

function mapRpcError(e: unknown): Error {
  if (!(e instanceof RpcError)) return e as Error;
  if (e.code === 'run-in-progress') return new Conflict(e.message);
  if (e.code === 'unknown-run' || e.code === 'not-waiting-input') return new InvalidAPIParameters(e.message);
  return new ServiceUnavailable(e.message);
}
