// `GET /stream/session/{name}/execute` upgraded to a plain WebSocket, as Backend.AI's `run`
// uses it: the first client frame is `{code, mode, options}`; the server sends `result`
// objects as output comes, until `finished` (or `exec-timeout`), then closes. While the code
// waits for input, a client frame `{mode: "input", code: "<line>"}` answers it.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { FlotillaError, InvalidAPIParameters } from '../../../schema/errors.ts';
import type { Logger } from '../../log.ts';
import { resultJson, type ExecutionService } from '../execution.ts';
import type { Keypairs } from '../keypairs.ts';
import type { SessionService } from '../sessions.ts';
import { verifySigned } from './auth.ts';

const PATH = /^\/stream\/session\/([^/?]+)\/execute(?:\?.*)?$/;
/** A WebSocket client sees output this often (the HTTP API waits up to ~1.5 s instead). */
const STREAM_FLUSH_MS = 100;

export function attachExecuteStream(server: { on(event: 'upgrade', cb: (req: IncomingMessage, socket: Duplex, head: Buffer) => void): unknown }, deps: {
  keypairs: Keypairs; sessions: SessionService; execution: ExecutionService; log: Logger;
}): WebSocketServer {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 9 * 1024 * 1024 });
  server.on('upgrade', (req, socket, head) => {
    const m = PATH.exec(req.url ?? '');
    if (!m) return; // socket.io's own upgrades
    void (async () => {
      let owner: string;
      try {
        ({ owner } = await verifySigned(deps.keypairs, { method: req.method ?? 'GET', url: req.url ?? '', headers: req.headers, query: Object.fromEntries(new URL(req.url ?? '', 'http://x').searchParams) }));
        await deps.sessions.find(owner, decodeURIComponent(m[1]));
      } catch (e) {
        const status = e instanceof FlotillaError ? e.status : 500;
        const body = JSON.stringify(e instanceof FlotillaError ? e.toProblem() : { type: 'https://api.backend.ai/probs/internal-server-error', title: 'Internal server error.' });
        socket.end(`HTTP/1.1 ${status} Error\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => serve(ws, owner, decodeURIComponent(m[1]), deps));
    })();
  });
  return wss;
}

function serve(ws: WebSocket, owner: string, ref: string, deps: { sessions: SessionService; execution: ExecutionService; log: Logger }): void {
  const frames: unknown[] = [];
  let wake: (() => void) | undefined;
  ws.on('message', (data) => {
    try { frames.push(JSON.parse(data.toString())); } catch { frames.push(undefined); }
    wake?.();
  });
  const nextFrame = () => new Promise<unknown>((resolve, reject) => {
    if (frames.length) { resolve(frames.shift()); return; }
    wake = () => { wake = undefined; resolve(frames.shift()); };
    ws.once('close', () => reject(new Error('closed')));
  });
  const fail = (e: unknown) => {
    const p = e instanceof FlotillaError ? e.toProblem() : { type: 'https://api.backend.ai/probs/internal-server-error', title: 'Internal server error.' };
    if (!(e instanceof FlotillaError)) deps.log.error({ err: e }, 'execute stream failed');
    // 1008 (policy violation) for what the client asked wrongly, 1011 (internal error) only for ours.
    const code = e instanceof FlotillaError && e.status < 500 ? 1008 : 1011;
    if (ws.readyState === ws.OPEN) { ws.send(JSON.stringify(p)); ws.close(code); }
  };
  void (async () => {
    const first = await nextFrame() as { code?: unknown; mode?: unknown; options?: unknown } | undefined;
    if (!first || typeof first !== 'object' || (first.mode !== undefined && first.mode !== 'query' && first.mode !== 'batch') || (first.code !== undefined && typeof first.code !== 'string')) {
      throw new InvalidAPIParameters('the first frame is {code, mode: "query" | "batch", options}');
    }
    let row = await deps.sessions.find(owner, ref);
    let r = await deps.execution.execute(row, {
      mode: (first.mode as 'query' | 'batch' | undefined) ?? 'query', code: (first.code as string | undefined) ?? '', runId: null,
      options: first.options && typeof first.options === 'object' ? first.options as Record<string, unknown> : {},
    }, STREAM_FLUSH_MS);
    for (;;) {
      if (r.console.length || r.status !== 'continued') ws.send(resultJson(r, false), { binary: false });
      if (r.status === 'finished' || r.status === 'exec-timeout') break;
      row = await deps.sessions.find(owner, ref);
      if (r.status === 'waiting-input') {
        const f = await nextFrame() as { code?: unknown } | undefined;
        r = await deps.execution.execute(row, { mode: 'input', code: typeof f?.code === 'string' ? f.code : '', runId: r.runId, options: {} }, STREAM_FLUSH_MS);
      } else {
        r = await deps.execution.execute(row, { mode: 'continue', code: '', runId: r.runId, options: {} }, STREAM_FLUSH_MS);
      }
    }
    ws.close(1000);
  })().catch(fail);
}
