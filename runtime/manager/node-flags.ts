// The V8 flags a manager process runs with. They must be on the node command line (V8 sizes its
// heap when the process starts; setting them later changes nothing), so every launcher of a
// manager passes them: bin/flotilla.js's shebang, scripts/up, the test helpers and benches that
// spawn `flotilla manager` or `up`, and the in-process scheduler bench. A manager started
// without them says so in its log (daemons.ts) and otherwise runs as before.
//
// --max-semi-space-size=64: a manager allocates a few hundred KB per session on the way to
// RUNNING, much of it alive across a commit; with V8's default (16 MB semi-spaces) its young
// generation was scavenged every ~60 ms at 1,000 sessions/s arriving, ~14 ms each, a quarter of
// its thread. bench/scheduler.ts, paired runs the same hour: 612 and 639 sessions/s accepted by
// default, 745 and 788/s at 64 (720/s at 32, 728/s at 128).
export const MANAGER_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=64'];

/** The manager flags this process was started without. */
export function missingManagerFlags(execArgv: readonly string[] = process.execArgv): string[] {
  return MANAGER_NODE_FLAGS.filter((f) => !execArgv.includes(f));
}

/** The node flags to start `bin/flotilla.js <command>` with: the manager's for `manager` and `up`. */
export const nodeFlagsFor = (command: string | undefined): readonly string[] => (command === 'manager' || command === 'up' ? MANAGER_NODE_FLAGS : []);
