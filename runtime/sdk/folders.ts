// Folder routes (`/folders...`, API.md "Folders").
import type { Client } from './client.ts';

export class Folders {
  constructor(private readonly client: Client) {}
}
