// `flotilla run` and `flotilla exec`: code in a session, output streamed as it comes, the
// code's exit code as the command's (Backend.AI's `run` does the same). Input the code asks for
// is read from this terminal's stdin. Ctrl-C interrupts the code in the session (the run ends
// with its KeyboardInterrupt, and `run --rm` still removes the session); a second Ctrl-C stops
// waiting for it.
import { createInterface } from 'node:readline';
import { withSpinner } from './progress.ts';
import type { Command } from 'commander';
import type { Client } from '../sdk/index.ts';
import { apiAction, clientFromSettings, parseSeconds } from './session.ts';

interface RunFlags { code?: string; build?: string; exec?: string; timeout?: number }

/** What a shell reports for a command ended by SIGINT. */
const INTERRUPTED_EXIT = 130;

/** Set when a second Ctrl-C gave up on a run whose polls go on in the background. */
let stoppedWaiting = false;
const exitIfStopped = () => { if (stoppedWaiting) process.exit(process.exitCode ?? INTERRUPTED_EXIT); };

async function runIn(client: Client, session: string, flags: RunFlags): Promise<number> {
  const batch = flags.exec !== undefined || flags.build !== undefined;
  let lines: AsyncIterator<string> | undefined;
  let stopWaiting!: () => void;
  const stopped = new Promise<'stopped'>((resolve) => { stopWaiting = () => resolve('stopped'); });
  let interrupts = 0;
  const onSigint = () => {
    if (++interrupts === 1) {
      console.error('\nflotilla: interrupting the code in the session (Ctrl-C again to stop waiting)');
      client.sessions.interrupt(session).catch((err: Error) => console.error(`flotilla: the interrupt failed: ${err.message}`));
    } else {
      stopWaiting();
    }
  };
  process.on('SIGINT', onSigint);
  try {
    const result = await Promise.race([stopped, client.sessions.run(session, flags.code ?? '', {
      mode: batch ? 'batch' : 'query',
      options: {
        ...(batch ? { build: flags.build ?? null, exec: flags.exec ?? flags.code ?? '' } : {}),
        ...(flags.timeout !== undefined ? { exec_timeout: flags.timeout } : {}),
      },
      onOutput: (stream, data) => (stream === 'stderr' ? process.stderr : process.stdout).write(data),
      onInput: async () => {
        lines ??= createInterface({ input: process.stdin })[Symbol.asyncIterator]();
        const next = await lines.next();
        return next.done ? '' : next.value;
      },
    })]);
    if (result === 'stopped') {
      console.error('flotilla: stopped waiting; the code may still run in the session');
      stoppedWaiting = true; // the SDK's poll loop is still going: the command exits once it has cleaned up
      return INTERRUPTED_EXIT;
    }
    if (result.status === 'exec-timeout') console.error('flotilla: the execution timed out');
    if (interrupts && result.exitCode !== 0) return INTERRUPTED_EXIT;
    return result.exitCode ?? (result.status === 'exec-timeout' ? 124 : 0);
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** Code to run, or a usage error (exit 2): nothing given would run nothing and look like success. */
function checkCode(opts: RunFlags): boolean {
  if (opts.code === undefined && opts.exec === undefined) {
    console.error('flotilla: give the code with -c, or a batch command with --exec (and --build)');
    process.exitCode = 2;
    return false;
  }
  return true;
}

export function registerRunCommands(program: Command): void {
  program.command('run <image>').description('start a session of <image>, run code in it with streamed output, exit with the code\'s exit code')
    .option('-c, --code <code>', 'code to run (query mode)')
    .option('--build <cmd>', 'batch mode: build command')
    .option('--exec <cmd>', 'batch mode: exec command')
    .option('--name <name>', 'session name')
    .option('--timeout <s>', 'execution timeout in seconds', parseSeconds)
    .option('--rm', 'destroy the session afterwards (also after Ctrl-C, or when it did not start)')
    .action(apiAction(async (image: string, opts: RunFlags & { name?: string; rm?: boolean }) => {
      if (!checkCode(opts)) return;
      const client = clientFromSettings();
      const s = await withSpinner(`starting a ${image} session`, client.sessions.create({ image, name: opts.name }));
      try {
        if (s.status !== 'RUNNING') {
          console.error(`flotilla: session ${s.sessionName} is ${s.status}, not RUNNING${opts.rm ? '' : ` (flotilla session info ${s.sessionName})`}`);
          process.exitCode = 1;
          return;
        }
        process.exitCode = await runIn(client, s.sessionId, opts);
      } finally {
        if (opts.rm) await withSpinner('removing the session', client.sessions.destroy(s.sessionId));
        exitIfStopped();
      }
    }));

  program.command('exec <session>').description('run code in an existing session (name or id), with streamed output')
    .option('-c, --code <code>', 'code to run (query mode)')
    .option('--build <cmd>', 'batch mode: build command')
    .option('--exec <cmd>', 'batch mode: exec command')
    .option('--timeout <s>', 'execution timeout in seconds', parseSeconds)
    .action(apiAction(async (session: string, opts: RunFlags) => {
      if (!checkCode(opts)) return;
      process.exitCode = await runIn(clientFromSettings(), session, opts);
      exitIfStopped();
    }));
}
