// Files streamed over HTTP with positional I/O, shared by the manager and the SDK.
//
// writeStreamAt: a stream written into a file, in batches. The manager's tus PATCH (a request
// body into the upload's part file) and the SDK's downloadFile (a response into a local file)
// use it. Socket chunks come 64 KiB at a time at most (libuv's read size); gathering them into
// WRITE_BATCH_BYTES before one positional writev(2) costs one thread-pool round trip per MiB
// instead of sixteen.
//
// sendFileRange: a file range written to a stream (the manager's download GET, the SDK's upload
// PATCH) from a few reused buffers. fs.createReadStream allocates a fresh buffer per read; a
// buffer of 1 MiB is past glibc's mmap/trim thresholds, so memory goes back to the kernel and
// faults in again page by page on every read, which on this kind of VM costs as much CPU as the
// copy itself.
import type { FileHandle } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';

/** Bytes gathered from the stream before one positional write. */
export const WRITE_BATCH_BYTES = 1 << 20;

export interface WriteStreamAtOptions {
  /** At most this many bytes are taken from the stream; the chunk that goes past is not written. Default: no limit. */
  limit?: number;
  /** The error for a stream longer than `limit` (it is destroyed). */
  tooLarge?: () => Error;
  /** The error for a stream closed without its end (a cut connection). */
  cutShort?: () => Error;
  /** Bytes per write (default WRITE_BATCH_BYTES). */
  batchBytes?: number;
}

/**
 * Write `src` into `handle` from position `start`. Chunks are gathered into batches of
 * `batchBytes`, each written with one positional writev(2); one write is in flight while the next
 * batch arrives, and the stream is paused while a full batch waits, so at most two batches are
 * held whatever the stream's length. On any failure (an error, a cut, `limit` passed, a write
 * failing) what arrived before it is still written, so the file holds every byte received, and
 * the promise rejects once no write is in flight (never while one could still land). Resolves
 * with the bytes written.
 */
export function writeStreamAt(src: Readable, handle: FileHandle, start: number, opts: WriteStreamAtOptions = {}): Promise<number> {
  const limit = opts.limit ?? Infinity;
  const batchMax = opts.batchBytes ?? WRITE_BATCH_BYTES;
  return new Promise<number>((resolve, reject) => {
    let pos = start;
    let batch: Buffer[] = [];
    let batchBytes = 0;
    let received = 0;
    let writing = false;
    let ended = false;
    let settled = false;
    let error: unknown;
    const settle = () => {
      if (settled) return;
      settled = true;
      src.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      if (error !== undefined) reject(error); else resolve(pos - start);
    };
    const pump = (): void => {
      if (writing || settled) return;
      if (batchBytes > 0 && (batchBytes >= batchMax || ended || error !== undefined)) {
        const bufs = batch;
        const n = batchBytes;
        batch = [];
        batchBytes = 0;
        writing = true;
        writeAllAt(handle, bufs, n, pos).then(() => {
          pos += n;
          writing = false;
          pump();
          if (!ended && error === undefined && batchBytes < batchMax) src.resume();
        }, (e: unknown) => {
          writing = false;
          error ??= e;
          batch = [];
          batchBytes = 0;
          if (!src.destroyed) src.destroy();
          settle();
        });
        return;
      }
      if (ended || error !== undefined) settle();
    };
    const onData = (chunk: Buffer) => {
      if (error !== undefined || ended) return;
      if (received + chunk.length > limit) {
        error = opts.tooLarge?.() ?? Object.assign(new Error(`the stream goes past ${limit} bytes`), { code: 'ERR_OUT_OF_RANGE' });
        if (!src.destroyed) src.destroy();
        pump();
        return;
      }
      received += chunk.length;
      batch.push(chunk);
      batchBytes += chunk.length;
      if (batchBytes >= batchMax) {
        if (writing) src.pause();
        pump();
      }
    };
    const onEnd = () => { ended = true; pump(); };
    const onError = (e: unknown) => { error ??= e; pump(); };
    // Closed without an end or an error: the connection was cut.
    const onClose = () => {
      if (ended) return;
      error ??= opts.cutShort?.() ?? Object.assign(new Error('the stream was cut short'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
      pump();
    };
    src.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
    if (src.readableEnded) onEnd();
    else if (src.destroyed) onClose();
  });
}

/** writev(2) at `pos` of the `n` bytes in `bufs`, again for the rest after a short write. */
export async function writeAllAt(handle: FileHandle, bufs: Buffer[], n: number, pos: number): Promise<void> {
  let done = (await handle.writev(bufs, pos)).bytesWritten;
  if (done === n) return;
  const all = Buffer.concat(bufs, n);
  while (done < n) {
    const w = (await handle.write(all, done, n - done, pos + done)).bytesWritten;
    if (w <= 0) throw Object.assign(new Error('a write made no progress'), { code: 'EIO' });
    done += w;
  }
}

/** Bytes per read of sendFileRange. */
export const READ_CHUNK_BYTES = 1 << 20;

export interface SendFileRangeOptions {
  /** Bytes per read (default READ_CHUNK_BYTES). */
  chunkBytes?: number;
  /** Buffers in rotation, so reads overlap the socket's writes (default 3). */
  buffers?: number;
  /** Called after each chunk is handed over, with the bytes sent so far. */
  onChunk?: (sent: number) => void;
}

/**
 * Write `length` bytes of `handle` from `start` into `dest`, reading into a few buffers reused in
 * rotation: a buffer is read into again only after `dest` has called back for its write (the
 * bytes are in the kernel by then), so no more than `buffers` chunks are in flight and nothing is
 * allocated per chunk. Does not end `dest`. Rejects if `dest` is closed or fails first, or if the
 * file ends early; resolves with the bytes sent.
 */
export function sendFileRange(handle: FileHandle, start: number, length: number, dest: Writable, opts: SendFileRangeOptions = {}): Promise<number> {
  const chunk = Math.max(1, Math.min(opts.chunkBytes ?? READ_CHUNK_BYTES, length));
  const free: Buffer[] = length > 0 ? Array.from({ length: Math.max(1, opts.buffers ?? 3) }, () => Buffer.allocUnsafeSlow(chunk)) : [];
  return new Promise<number>((resolve, reject) => {
    let readTo = 0; // bytes read (or being read) from `start`
    let sent = 0; // bytes whose write has called back
    let inFlight = 0;
    let reading = false;
    let failed: unknown;
    let settled = false;
    // Settles once no read is filling a buffer; after a failure, writes still in flight are not
    // waited for (their buffers are never read into again).
    const settle = () => {
      if (settled || reading) return;
      if (failed === undefined && (sent < length || inFlight > 0)) return;
      settled = true;
      dest.off('close', onClose).off('error', fail);
      if (failed !== undefined) reject(failed); else resolve(sent);
    };
    const fail = (e: unknown) => { failed ??= e; settle(); };
    const onClose = () => {
      if (sent < length) fail(Object.assign(new Error('the connection closed before the file was sent'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
    };
    const next = (): void => {
      if (settled || reading || failed !== undefined || readTo >= length || !free.length) { settle(); return; }
      const buf = free.pop()!;
      const want = Math.min(chunk, length - readTo);
      const pos = start + readTo;
      reading = true;
      handle.read(buf, 0, want, pos).then(({ bytesRead }) => {
        reading = false;
        if (failed !== undefined) { settle(); return; }
        if (bytesRead <= 0) { fail(Object.assign(new Error(`the file ends at ${pos} bytes, before the ${start + length} to send`), { code: 'EIO' })); return; }
        readTo += bytesRead;
        inFlight++;
        dest.write(buf.subarray(0, bytesRead), (err?: Error | null) => {
          inFlight--;
          if (err) { fail(err); return; }
          sent += bytesRead;
          free.push(buf);
          opts.onChunk?.(sent);
          next();
        });
        next();
      }, (e: unknown) => { reading = false; fail(e); });
    };
    dest.on('close', onClose).on('error', fail);
    next();
  });
}
