// `flotilla run` and `flotilla exec`: code in a session, output streamed as it comes, the
// code's exit code as the command's (Backend.AI's `run` does the same). Input the code asks for
// is read from this terminal's stdin.
import { createInterface } from 'node:readline';
import { withSpinner } from './progress.ts';
import type { Command } from 'commander';
import type { Client } from '../sdk/index.ts';
import { apiAction, clientFromSettings } from './session.ts';

interface RunFlags { code?: string; build?: string; exec?: string; timeout?: string }

async function runIn(client: Client, session: string, flags: RunFlags): Promise<number> {
  const batch = flags.exec !== undefined || flags.build !== undefined;
  let lines: AsyncIterator<string> | undefined;
  const result = await client.sessions.run(session, flags.code ?? '', {
    mode: batch ? 'batch' : 'query',
    options: {
      ...(batch ? { build: flags.build ?? null, exec: flags.exec ?? flags.code ?? '' } : {}),
      ...(flags.timeout ? { exec_timeout: Number(flags.timeout) } : {}),
    },
    onOutput: (stream, data) => (stream === 'stderr' ? process.stderr : process.stdout).write(data),
    onInput: async () => {
      lines ??= createInterface({ input: process.stdin })[Symbol.asyncIterator]();
      const next = await lines.next();
      return next.done ? '' : next.value;
    },
  });
  if (result.status === 'exec-timeout') console.error('flotilla: the execution timed out');
  return result.exitCode ?? (result.status === 'exec-timeout' ? 124 : 0);
}

export function registerRunCommands(program: Command): void {
  program.command('run <image>').description('start a session of <image>, run code in it with streamed output, exit with the code\'s exit code')
    .option('-c, --code <code>', 'code to run (query mode)')
    .option('--build <cmd>', 'batch mode: build command')
    .option('--exec <cmd>', 'batch mode: exec command')
    .option('--name <name>', 'session name')
    .option('--timeout <s>', 'execution timeout in seconds')
    .option('--rm', 'destroy the session afterwards')
    .action(apiAction(async (image: string, opts: RunFlags & { name?: string; rm?: boolean }) => {
      const client = clientFromSettings();
      const s = await withSpinner(`starting a ${image} session`, client.sessions.create({ image, name: opts.name }));
      if (s.status !== 'RUNNING') throw new Error(`the session is ${s.status}, not RUNNING`);
      try {
        process.exitCode = await runIn(client, s.sessionId, opts);
      } finally {
        if (opts.rm) await withSpinner('removing the session', client.sessions.destroy(s.sessionId));
      }
    }));

  program.command('exec <session>').description('run code in an existing session (name or id), with streamed output')
    .option('-c, --code <code>', 'code to run (query mode)')
    .option('--build <cmd>', 'batch mode: build command')
    .option('--exec <cmd>', 'batch mode: exec command')
    .option('--timeout <s>', 'execution timeout in seconds')
    .action(apiAction(async (session: string, opts: RunFlags) => {
      process.exitCode = await runIn(clientFromSettings(), session, opts);
    }));
}
