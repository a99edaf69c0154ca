// `flotilla folder create|ls|rm|upload|download|files|share` (issue 9).
import type { Command } from 'commander';

export function registerFolderCommands(program: Command): void {
  void program;
}
