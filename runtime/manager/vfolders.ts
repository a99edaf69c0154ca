// Virtual folders (API.md "Folders", issue 9): folders on the storage root (`vfolder.root`),
// owned by a keypair, shared with ro/rw permissions, mounted into kernels.
import type { LiveClusterConfig } from '../../config/live.ts';
import type { Logger } from '../log.ts';
import type { Database } from '../stores/types.ts';

export interface VfolderDeps { db: Database; config: LiveClusterConfig; log: Logger }

export class VfolderService {
  constructor(readonly deps: VfolderDeps) {}
}
