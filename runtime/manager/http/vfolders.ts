// Folder routes of API.md "Folders" (issue 9).
import type { VfolderService } from '../vfolders.ts';
import type { App } from './app.ts';

/** Add the `/folders...` routes. */
export function vfolderRoutes(app: App, deps: { vfolders: VfolderService }): void {
  void app; void deps;
}
