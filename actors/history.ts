// Status history kept in an actor's context: every status entered, in order, with its time.
// The runtime persists the entries it has not persisted yet (status_history, session_events),
// so a status that lasts no time at all (SCHEDULED → PREPARING in one macrostep) is still
// recorded.

export interface StatusChange { status: string; at: string; info?: string }

export function appendHistory(history: StatusChange[], status: string, info?: string): StatusChange[] {
  const entry: StatusChange = { status, at: new Date().toISOString() };
  if (info) entry.info = info;
  return [...history, entry];
}
