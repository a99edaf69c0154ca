// Structured logs (pino). Every line about a session, kernel or agent carries its id as a
// field (sessionId, kernelId, agentId): take a child logger with those bindings.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(component: string, level = process.env.FLOTILLA_LOG_LEVEL ?? 'info'): Logger {
  return pino({
    level,
    base: { component, pid: process.pid },
    // Secrets must never reach a log line, whatever object is logged.
    redact: { paths: ['secretKey', '*.secretKey', 'secret_key', '*.secret_key', 'headers.authorization', 'token', '*.token', 'auth.token'], censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}
