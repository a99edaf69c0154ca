// What session watchers receive (socket.io /watch, SSE /events/session, the SDK's watch()).

/** A lifecycle event, under its Backend.AI name (session_started, kernel_terminated, ...). */
export interface WatchEvent {
  name: string;
  /** Position in the cluster's event log: resume after it with `sinceSeq` / `Last-Event-ID`. */
  seq: number;
  sessionId: string;
  sessionName: string | null;
  kernelId: string | null;
  ownerAccessKey: string;
  status: string;
  reason: string | null;
  at: string;
}

/** A piece of a run's output (`execution_output`): live only, no seq. */
export interface OutputEvent {
  sessionId: string;
  sessionName: string;
  kernelId: string;
  ownerAccessKey: string;
  runId: string;
  status: string;
  exitCode: number | null;
  console: Array<['stdout' | 'stderr' | 'media', string]>;
}

/** The answer to `subscribe`. `lastSeq`: the newest seq the subscriber could see when it subscribed. */
export interface SubscribeAck { ok: boolean; replayed?: number; lastSeq?: number; error?: string }
