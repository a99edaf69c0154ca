// The SDK's public surface: the client, the payload types, and the error classes it throws.
export { Client, type ClientOptions, type QueryValue, type RequestOptions } from './client.ts';
export { Sessions } from './sessions.ts';
export { SessionHandle, type Execution } from './session.ts';
export { Folders } from './folders.ts';
export { inspectActors, signHandshake, filterActors, applyActorDelta, type ActorNode, type ActorKind, type ActorGraphSnapshot, type ActorGraphDelta, type ActorGraphWatch, type ActorFilter, type InspectOptions } from './inspect.ts';
export { watchSessions, type SessionWatch, type WatchOptions, type WatchItem, type WatchEvent, type OutputEvent } from './watch.ts';
export { Admin, type KeypairInfo, type CreatedKeypair, type ResourcePolicy, type ResourcePolicyInput, type JobStatus, type UsageReport, type ResourceGroup, type ResourceGroupInput, type ResourceGroupOptions } from './admin.ts';
export { Files, type UploadFile, type FileEntry, type FileList } from './files.ts';
export type * from './types.ts';
export {
  FlotillaError, InvalidAPIParameters, AuthorizationFailed, Forbidden, NotFound, SessionNotFound, ImageNotFound, Conflict,
  SessionAlreadyExists, QuotaExceeded, InstanceNotAvailable, PayloadTooLarge, RateLimitExceeded, InternalServerError,
  ServiceUnavailable, errorFromProblem, type ProblemBody,
} from '../../schema/errors.ts';
export { API_VERSION } from '../../schema/signing.ts';
export type { SessionStatus, KernelStatus } from '../../schema/status.ts';
