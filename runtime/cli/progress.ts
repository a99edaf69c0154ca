// A spinner on stderr for operations that wait (a session starting, one ending): it shows what
// is awaited and for how long, only when stderr is a terminal, so scripts and pipes see nothing.

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** Run `work` with a spinner labelled `label`; the line is cleared when it settles. */
export async function withSpinner<T>(label: string, work: Promise<T>, stream: NodeJS.WriteStream = process.stderr): Promise<T> {
  if (!stream.isTTY) return work;
  const started = Date.now();
  let i = 0;
  const draw = () => stream.write(`\r${FRAMES[i++ % FRAMES.length]} ${label} ${((Date.now() - started) / 1000).toFixed(1)}s\x1b[K`);
  draw();
  const timer = setInterval(draw, 100);
  try {
    return await work;
  } finally {
    clearInterval(timer);
    stream.write('\r\x1b[K');
  }
}
