// Group commit: what arrives while a batch is being written goes together in the next one, so
// a burst of N costs a few transactions instead of N (each with its round trips and commit).
// One batch is in flight at a time, which also keeps a burst from taking every pooled
// connection away from the other writers.

/** Items (with their callers) queued and committed in batches of at most maxBatch. */
export class GroupCommit<T, R> {
  private queue: Array<{ item: T; resolve: (r: R) => void; reject: (e: Error) => void }> = [];
  private running = false;

  /** commit gets the batch in arrival order and returns one result per item. */
  constructor(private readonly commit: (items: T[]) => Promise<R[]>, private readonly maxBatch: number) {}

  /** Resolves with the item's result once its batch has committed; rejects if the batch failed. */
  run(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.running) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.running = true;
    // Let the rest of this turn's arrivals join the first batch.
    await new Promise((r) => setImmediate(r));
    try {
      while (this.queue.length) {
        const batch = this.queue.splice(0, this.maxBatch);
        try {
          const results = await this.commit(batch.map((b) => b.item));
          batch.forEach((b, i) => b.resolve(results[i]));
        } catch (err) {
          for (const b of batch) b.reject(err as Error);
        }
      }
    } finally {
      this.running = false;
    }
  }
}
