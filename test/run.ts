// Runs one test folder with uvu (as `uvu <dir> [pattern]` does), then exits. uvu waits for the
// event loop to empty, so a handle some library keeps open (an idle socket to Docker, say)
// would hold the run forever after its last test; here the results decide the exit code.
import { parse } from 'uvu/parse';
import { run } from 'uvu/run';

const [dir, pattern] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node --import tsx test/run.ts <dir> [pattern]');
  process.exit(2);
}
const ctx = await parse(dir, pattern, { cwd: process.cwd() });
await run(ctx.suites, { bail: false });
// Let the summary reach stdout before leaving.
process.stdout.write('', () => process.exit(process.exitCode ?? 0));
