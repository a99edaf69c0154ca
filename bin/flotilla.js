#!/usr/bin/env -S node --max-semi-space-size=64
// The `flotilla` command: TypeScript sources run through tsx's loader, so there is no build step.
// The shebang carries the manager's node flags (runtime/manager/node-flags.ts: MANAGER_NODE_FLAGS).
import { register } from 'tsx/esm/api';
register();
await import('../runtime/cli/main.ts');
