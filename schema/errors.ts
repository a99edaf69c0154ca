// The one family of errors flotilla raises to users. Each class has a stable `code` (the
// problem name in Backend.AI's `https://api.backend.ai/probs/<code>` type URLs) and the HTTP
// status API.md assigns to it. The manager turns any of these into the JSON problem body; the
// SDK turns a problem body back into the same class, so callers can `instanceof` either side.

export const PROBLEM_BASE = 'https://api.backend.ai/probs/';

export interface ProblemBody { type: string; title: string; msg?: string; data?: unknown }

export class FlotillaError extends Error {
  /** HTTP status the manager answers with. */
  readonly status: number = 500;
  /** Stable problem code (the last part of the problem type URL). */
  readonly code: string = 'internal-server-error';
  /** Human sentence, constant for the class. */
  readonly title: string = 'Internal server error.';
  readonly data?: unknown;
  constructor(msg?: string, data?: unknown) {
    super(msg);
    this.name = new.target.name;
    if (data !== undefined) this.data = data;
  }
  get type(): string { return PROBLEM_BASE + this.code; }
  toProblem(): ProblemBody {
    const body: ProblemBody = { type: this.type, title: this.title };
    if (this.message) body.msg = this.message;
    if (this.data !== undefined) body.data = this.data;
    return body;
  }
}

function define(name: string, status: number, code: string, title: string) {
  const cls = class extends FlotillaError {
    override readonly status = status;
    override readonly code = code;
    override readonly title = title;
  };
  Object.defineProperty(cls, 'name', { value: name });
  return cls;
}

export const InvalidAPIParameters = define('InvalidAPIParameters', 400, 'invalid-api-params', 'Missing or invalid API parameters.');
export const AuthorizationFailed = define('AuthorizationFailed', 401, 'auth-failed', 'Credential/signature mismatch.');
export const Forbidden = define('Forbidden', 403, 'generic-forbidden', 'Forbidden operation.');
export const NotFound = define('NotFound', 404, 'generic-not-found', 'Unknown URL path or object.');
export const SessionNotFound = define('SessionNotFound', 404, 'session-not-found', 'No such session.');
export const ImageNotFound = define('ImageNotFound', 404, 'image-not-found', 'Unknown image.');
export const Conflict = define('Conflict', 409, 'conflict', 'The request conflicts with the current state.');
export const SessionAlreadyExists = define('SessionAlreadyExists', 409, 'session-already-exists', 'A session with this name already exists.');
export const QuotaExceeded = define('QuotaExceeded', 412, 'quota-exceeded', 'You have reached your resource limit.');
export const InstanceNotAvailable = define('InstanceNotAvailable', 412, 'instance-not-available', 'No agent can provide the requested resources.');
export const PayloadTooLarge = define('PayloadTooLarge', 413, 'payload-too-large', 'The request is too large.');
export const RateLimitExceeded = define('RateLimitExceeded', 429, 'rate-limit-exceeded', 'Rate limit exceeded.');
export const InternalServerError = define('InternalServerError', 500, 'internal-server-error', 'Internal server error.');
export const ServiceUnavailable = define('ServiceUnavailable', 503, 'service-unavailable', 'A store or service is unavailable.');

/** Raised at process start for a wrong or missing setting; names the setting. Never an HTTP answer. */
export class ConfigError extends Error {
  constructor(readonly setting: string, msg: string) {
    super(`setting ${setting}: ${msg}`);
    this.name = 'ConfigError';
  }
}

const byCode = new Map<string, new (msg?: string, data?: unknown) => FlotillaError>(
  [InvalidAPIParameters, AuthorizationFailed, Forbidden, NotFound, SessionNotFound, ImageNotFound, Conflict,
    SessionAlreadyExists, QuotaExceeded, InstanceNotAvailable, PayloadTooLarge, RateLimitExceeded,
    InternalServerError, ServiceUnavailable].map((cls) => [new cls().code, cls]),
);

/** Rebuild the typed error from a problem body (used by the SDK). */
export function errorFromProblem(status: number, body: Partial<ProblemBody> | undefined): FlotillaError {
  const code = typeof body?.type === 'string' && body.type.startsWith(PROBLEM_BASE) ? body.type.slice(PROBLEM_BASE.length) : '';
  const cls = byCode.get(code);
  const msg = body?.msg ?? body?.title ?? `HTTP ${status}`;
  if (cls) return new cls(msg, body?.data);
  const err = new FlotillaError(msg, body?.data);
  Object.defineProperties(err, { status: { value: status }, code: { value: code || `http-${status}` }, title: { value: body?.title ?? '' } });
  return err;
}
