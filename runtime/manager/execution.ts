// Code execution in a session's main kernel (API.md "Execute"): query, batch, continue and
// input, relayed to the agent, whose reply comes within ~2 s (`continued` for long runs, the
// client polls with `continue`), and interrupt. Counts queries and activity for idle checks.
import { randomUUID } from 'node:crypto';
import type { ExecuteReply } from '../../schema/agent-rpc.ts';
import { Conflict, InvalidAPIParameters, ServiceUnavailable } from '../../schema/errors.ts';
import type { Database } from '../stores/types.ts';
import { RpcError, type AgentRegistry } from './agents.ts';
import type { SessionRow } from './sessions.ts';

export interface ExecuteBody { mode: 'query' | 'batch' | 'continue' | 'input'; code: string; runId: string | null; options: Record<string, unknown> }

/** The agent answers within its flush interval; this bounds a lost answer. */
const EXECUTE_RPC_TIMEOUT_MS = 15_000;

export class ExecutionService {
  constructor(private readonly deps: { db: Database; agents: AgentRegistry }) {}

  private async mainKernel(row: SessionRow): Promise<{ id: string; agent_id: string }> {
    if (row.status !== 'RUNNING') throw new Conflict(`the session is ${row.status}, not RUNNING`);
    const k = (await this.deps.db.query<{ id: string; agent_id: string | null }>(
      `SELECT id, agent_id FROM kernels WHERE session_id = $1 AND cluster_role = 'main'`, [row.id])).rows[0];
    if (!k?.agent_id) throw new Conflict('the session has no running main kernel');
    return { id: k.id, agent_id: k.agent_id };
  }

  async execute(row: SessionRow, body: ExecuteBody, flushMs?: number): Promise<ExecuteReply & { options: Record<string, unknown>; files: unknown[] }> {
    const k = await this.mainKernel(row);
    const starts = body.mode === 'query' || body.mode === 'batch';
    if (!starts && !body.runId) throw new InvalidAPIParameters(`runId is required with mode ${body.mode}`);
    const runId = body.runId ?? randomUUID().replace(/-/g, '');
    const o = body.options ?? {};
    const timeoutS = Number(o.exec_timeout ?? o.execTimeout ?? o.timeout ?? 0);
    if (!Number.isFinite(timeoutS) || timeoutS < 0) throw new InvalidAPIParameters('options.exec_timeout: seconds, a non-negative number');
    if (body.mode === 'batch' && typeof o.exec !== 'string' && !body.code) throw new InvalidAPIParameters('batch mode needs options.exec (or code)');
    if (starts) {
      await this.deps.db.query(`UPDATE sessions SET num_queries = num_queries + 1, last_activity_at = now() WHERE id = $1`, [row.id]);
    } else {
      await this.deps.db.query(`UPDATE sessions SET last_activity_at = now() WHERE id = $1`, [row.id]);
    }
    try {
      const reply = await this.deps.agents.call(k.agent_id, 'execute', {
        kernelId: k.id, runId, mode: body.mode, code: body.code ?? '',
        ...(body.mode === 'batch' ? { build: typeof o.build === 'string' ? o.build : null, exec: typeof o.exec === 'string' ? o.exec : body.code } : {}),
        ...(timeoutS > 0 ? { timeoutMs: Math.round(timeoutS * 1000) } : {}),
        ...(flushMs ? { flushMs } : {}),
      }, EXECUTE_RPC_TIMEOUT_MS);
      return { ...reply, options: {}, files: [] };
    } catch (e) {
      throw mapRpcError(e);
    }
  }

  async interrupt(row: SessionRow): Promise<void> {
    const k = await this.mainKernel(row);
    try {
      await this.deps.agents.call(k.agent_id, 'interrupt', { kernelId: k.id });
    } catch (e) { throw mapRpcError(e); }
  }
}

function mapRpcError(e: unknown): Error {
  if (!(e instanceof RpcError)) return e as Error;
  if (e.code === 'run-in-progress') return new Conflict(e.message);
  if (e.code === 'unknown-run' || e.code === 'not-waiting-input') return new InvalidAPIParameters(e.message);
  return new ServiceUnavailable(e.message);
}
