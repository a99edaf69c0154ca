"""flotilla python kernel runner: PID 1 of the python image (`python3 -u /opt/flotilla/runner.py`).

Talks JSON lines with the agent over the container's attached stdin/stdout, one object per
line in both directions. The protocol is specified in PROTOCOL.md next to this file
(DESIGN.md §8). Stdlib only.

Attach/stdin behaviour this relies on (checked against Docker 20.10, API 1.41): the container
is created with OpenStdin: true, StdinOnce: false, Tty: false. Its stdin is then a pipe owned by
the daemon that outlives every attach: when an attach ends (the client half-closes or destroys
its hijacked socket) the daemon stops copying that client's input but does NOT close the pipe,
so the runner never sees EOF and the next attach writes into the same pipe. Output written
while nobody is attached only goes to the container log; the replay buffer (below) is how the
agent gets it back. EOF only happens when the container was created without OpenStdin or with
StdinOnce: true; even then the runner stays alive (the container keeps running until it is
stopped), it just cannot be talked to anymore.

Layout of the process:
- When started as PID 1 it forks: PID 1 stays a tiny init that reaps orphaned processes (user
  code's background jobs) and exits on SIGTERM; the child is the runner proper.
- The protocol uses private duplicates of fd 0/1. fd 0 becomes /dev/null, fd 1 and fd 2 become
  pipes read by the runner, so nothing user code (or its subprocesses) writes can corrupt the
  protocol, and fd-level output is captured too.
- sys.stdout is a C-level buffered stream on fd 1 (see Output): print() runs no Python code.
- Threads: the main thread runs the code (so KeyboardInterrupt and signal handlers work as in
  a normal interpreter); `reader` parses requests; `sender` is the only writer of the protocol
  fd; `pump` turns what arrives in the fd 1/2 pipes into `out` messages; `flusher` pushes
  sys.stdout's buffer into its pipe every FLUSH_INTERVAL.
"""

import builtins
import codecs
import collections
import fcntl
import functools
import io
import json
import linecache
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
import types

LANGUAGE = "python"
VERSION = "%d.%d.%d" % sys.version_info[:3]
# A request line longer than this is discarded (and reported) instead of being buffered without end.
MAX_LINE = 64 * 1024 * 1024
# sys.stdout's buffer: written into the capture pipe when full, and at the latest every
# FLUSH_INTERVAL (see Output). Python-level output (stderr) is posted once FLUSH_BYTES are
# queued, else within FLUSH_INTERVAL.
STDOUT_BUFFER = 64 * 1024
FLUSH_BYTES = 64 * 1024
FLUSH_INTERVAL = 0.02
# The capture pipes' capacity (Linux F_SETPIPE_SZ; the default is 64 KiB) and the read size.
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1024 * 1024
READ_SIZE = 1024 * 1024
# After a read smaller than FLUSH_BYTES the pump waits this long before reading again.
PUMP_GAP = 0.002
# One `out` message carries at most this many bytes of output (a huge single write is split).
MAX_MESSAGE_BYTES = 1024 * 1024
# Bytes of unacknowledged messages kept for replay; beyond this, producers of output block.
REPLAY_LIMIT = 64 * 1024 * 1024
# An interrupted subprocess gets SIGKILL this long after SIGINT.
KILL_AFTER = 2.0
HOME = "/home/work"
WORK_UID = 1000
RUNNER_FILE = os.path.abspath(__file__)
RUNNER_GLOBALS = globals()
ORIGINAL_INPUT = builtins.input
RAW_WRITE = os.write  # os.write itself is wrapped for user code (install_flush_points)


def json_line(obj):
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "backslashreplace")


def utf8_incomplete(data):
    """How many bytes at the end of `data` are the start of a UTF-8 character whose rest is
    missing (0 to 3)."""
    n = len(data)
    for k in range(1, 4 if n >= 3 else n + 1):
        b = data[n - k]
        if b < 0x80:
            return 0
        if b >= 0xC0:  # a lead byte: complete if it has all its continuation bytes
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return k if k < need else 0
    return 0


NOT_CONTROL = bytes(range(32, 256))


def json_bytes(data):
    """`data` (UTF-8 bytes, maybe invalid) as a JSON string literal in UTF-8 bytes; invalid
    UTF-8 becomes U+FFFD. The common case (no control characters but newline, tab and CR)
    takes a few C-level passes; json's own escaping is 2-7x slower."""
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            data = data.decode("utf-8", "replace").encode("utf-8")
    ctrl = data.translate(None, NOT_CONTROL)
    if ctrl and ctrl.translate(None, b"\n\t\r"):
        return json.encoder.encode_basestring_ascii(data.decode("utf-8", "replace")).encode()
    if b"\\" in data:
        data = data.replace(b"\\", b"\\\\")
    if b'"' in data:
        data = data.replace(b'"', b'\\"')
    if ctrl:
        if b"\n" in ctrl:
            data = data.replace(b"\n", b"\\n")
        if b"\t" in ctrl:
            data = data.replace(b"\t", b"\\t")
        if b"\r" in ctrl:
            data = data.replace(b"\r", b"\\r")
    return b'"' + data + b'"'


def valid_id(v):
    return (isinstance(v, str) and v != "") or (isinstance(v, int) and not isinstance(v, bool))


# --------------------------------------------------------------------------------------------
# Transport: sequence numbers, the replay buffer with back-pressure, and the single writer.
# --------------------------------------------------------------------------------------------


class Transport:
    def __init__(self, fd):
        self.fd = fd
        self.cond = threading.Condition()  # seq, buf, unacked, queue
        self.wlock = threading.Lock()  # held by the sender while it writes a batch
        self.seq = 0
        self.buf = collections.deque()  # (seq, line) not yet acknowledged, in seq order
        self.unacked = 0  # bytes in buf
        self.queue = collections.deque()  # (seq or None, line) not yet written
        threading.Thread(target=self._sender, name="sender", daemon=True).start()

    def send_raw(self, obj):
        """A message without seq (ready, pong, error): written once, never replayed."""
        line = json_line(obj)
        with self.cond:
            self.queue.append((None, line))
            self.cond.notify_all()

    def post(self, op, fields):
        """A sequenced control message (finished, build-finished, waiting-input); never blocks."""
        tail = json_line(fields)[1:]  # drop the opening brace
        with self.cond:
            self.seq += 1
            head = b'{"op":"%s","seq":%d' % (op.encode(), self.seq)
            line = head + (b"," + tail if tail != b"}\n" else tail)
            self._append(self.seq, line)
            self.cond.notify_all()

    def post_out(self, tails):
        """`out` messages, given as the encoded text after the seq; blocks while the replay
        buffer is full (an empty buffer always takes one message, however large)."""
        with self.cond:
            for tail in tails:
                while self.unacked and self.unacked + len(tail) > REPLAY_LIMIT:
                    self.cond.wait(0.5)
                self.seq += 1
                self._append(self.seq, b'{"op":"out","seq":%d' % self.seq + tail)
                self.cond.notify_all()

    def _append(self, seq, line):
        self.buf.append((seq, line))
        self.unacked += len(line)
        self.queue.append((seq, line))

    def ack(self, upto):
        with self.cond:
            buf = self.buf
            while buf and buf[0][0] <= upto:
                self.unacked -= len(buf.popleft()[1])
            self.cond.notify_all()

    def replay(self, frm):
        # Holding wlock means no batch is half written; the new queue is every unacknowledged
        # message after `frm` (the old queue was a suffix of buf) plus unsent seq-less messages.
        with self.wlock:
            with self.cond:
                raw = [item for item in self.queue if item[0] is None]
                self.queue = collections.deque(raw + [item for item in self.buf if item[0] > frm])
                self.cond.notify_all()

    def _sender(self):
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
            with self.wlock:
                with self.cond:
                    batch = self.queue
                    self.queue = collections.deque()
                if not batch:
                    continue
                data = b"".join(line for _, line in batch)
                view = memoryview(data)
                while view:
                    try:
                        n = RAW_WRITE(self.fd, view)
                    except InterruptedError:
                        continue
                    except OSError:
                        # Nobody to report to if the protocol fd fails; keep serving (replay
                        # still has every sequenced message).
                        break
                    view = view[n:]


# --------------------------------------------------------------------------------------------
# Output: stdout, stderr and the fd 1/2 capture pipes, in order, into `out` messages.
# --------------------------------------------------------------------------------------------


class Output:
    """sys.stdout is a C-level TextIOWrapper over a BufferedWriter on fd 1, which is the stdout
    capture pipe: print() runs no Python code. The buffer goes into the pipe when it is full,
    on flush(), every FLUSH_INTERVAL (the flusher thread), and before anything that could write
    to fd 1/2 behind it (fork, exec, os.system, subprocesses, os.write(1|2), stderr writes,
    input(), the end of a run). Subprocesses write into the same pipes, so stdout keeps its
    order by construction. The `pump` thread reads the pipes into `q`, a deque of (stream,
    text) in output order, and posts it as `out` messages. A write to sys.stderr (Python code)
    first pushes the stdout buffer into the pipe and moves what the pipes hold into `q`, then
    appends itself: that keeps the order across the two streams."""

    def __init__(self, transport):
        self.transport = transport
        self.q = collections.deque()
        self.pending = 0  # characters in q (approximate: no lock)
        self.flush_lock = threading.Lock()  # keeps posts (and so seq numbers) in output order
        self.fd_lock = threading.Lock()  # one reader of the capture pipes at a time
        self.run_id = None  # the run output is attributed to (the current one, else the last)
        self.fds = []  # [(fd, stream, partial character)] of the fd 1/2 capture pipes
        self.poller = None
        self.stdout = None  # the TextIOWrapper on fd 1 (sys.stdout unless user code replaced it)

    def capture_fds(self):
        """Points fd 1 and fd 2 at pipes whose data becomes stdout/stderr output."""
        self.poller = select.poll()
        for target, stream in ((1, "stdout"), (2, "stderr")):
            r, w = os.pipe()
            try:
                fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)  # fewer wake-ups of the pump
            except OSError:
                pass
            os.set_blocking(r, False)
            os.dup2(w, target)  # inheritable: subprocesses write here
            os.close(w)
            self.fds.append((r, stream, b""))  # b"": the start of a split character
            self.poller.register(r, select.POLLIN)
        raw = io.FileIO(1, "wb", closefd=False)
        # write_through: text goes straight into the BufferedWriter, whose lock orders every
        # write and flush whatever thread makes it (TextIOWrapper's own pending text is not
        # locked, so a flush from another thread could reorder it).
        self.stdout = io.TextIOWrapper(
            io.BufferedWriter(raw, buffer_size=STDOUT_BUFFER), encoding="utf-8", errors="backslashreplace", write_through=True
        )
        threading.Thread(target=self._pump, name="pump", daemon=True).start()
        threading.Thread(target=self._flusher, name="flusher", daemon=True).start()

    def flush_stdout(self):
        """Pushes buffered sys.stdout output into the capture pipe (any thread; never in a
        process forked from the runner, which has its own sys.stdout)."""
        s = self.stdout
        if s is not None:
            try:
                s.flush()
            except (OSError, ValueError):
                pass

    def write(self, stream, text):
        """Output produced by Python code other than print to stdout: sys.stderr writes, the
        runner's own messages (tracebacks) and batch commands' output."""
        data = text.encode("utf-8", "backslashreplace")
        self.flush_stdout()
        with self.fd_lock:  # also waits for a pipe read in progress, keeping order
            if self.poller.poll(0):
                self._drain_fds()
            self.q.append((stream, data))
            self.pending += len(data)
        if self.pending >= FLUSH_BYTES:
            self.post()

    def sync(self):
        """Everything written so far becomes `out` messages now (before `finished`,
        `waiting-input`, `build-finished`)."""
        self.flush_stdout()
        with self.fd_lock:
            self._drain_fds()
        self.post()

    def _drain_fds(self):
        """Moves what is in the capture pipes into q, holding back a UTF-8 character whose
        rest has not arrived yet; caller holds fd_lock. Returns the bytes read."""
        total = 0
        for i, (fd, stream, partial) in enumerate(self.fds):
            while True:
                try:
                    data = os.read(fd, READ_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                if not data:
                    break
                n = len(data)
                total += n
                if partial:
                    data = partial + data
                cut = utf8_incomplete(data)
                if cut:
                    partial = data[-cut:]
                    data = data[:-cut]
                else:
                    partial = b""
                if data:
                    self.q.append((stream, data))
                    self.pending += len(data)
                if n < READ_SIZE:
                    break
            self.fds[i] = (fd, stream, partial)
        return total

    def post(self):
        """Posts what q holds as `out` messages (neighbours of one stream merged), each with
        at most MAX_MESSAGE_BYTES of output, cut between UTF-8 characters."""
        with self.flush_lock:
            self.pending = 0
            q = self.q
            items = [q.popleft() for _ in range(len(q))]
            if not items:
                return
            segs = []
            cur, parts = None, []
            for stream, data in items:
                if stream != cur:
                    if parts:
                        segs.append((cur, b"".join(parts)))
                    cur, parts = stream, [data]
                else:
                    parts.append(data)
            segs.append((cur, b"".join(parts)))
            idj = json.dumps(self.run_id).encode()
            tails = []
            for stream, data in segs:
                view = memoryview(data)
                while view:
                    n = len(view)
                    if n > MAX_MESSAGE_BYTES:
                        n = MAX_MESSAGE_BYTES
                        while n > MAX_MESSAGE_BYTES - 4 and view[n] & 0xC0 == 0x80:
                            n -= 1  # do not cut a character
                    tails.append(b',"id":%s,"stream":"%s","data":%s}\n' % (idj, stream.encode(), json_bytes(view[:n].tobytes())))
                    view = view[n:]
            self.transport.post_out(tails)

    def _pump(self):
        """Reads the capture pipes as data arrives and posts it. After a small read it waits
        PUMP_GAP, so a producer that flushes often still gets its output coalesced."""
        poller = select.poll()
        for r, _, _ in self.fds:
            poller.register(r, select.POLLIN)
        while True:
            try:
                poller.poll()
            except InterruptedError:
                continue
            with self.fd_lock:
                n = self._drain_fds()
            self.post()
            if n < FLUSH_BYTES:
                time.sleep(PUMP_GAP)

    def _flusher(self):
        """Every FLUSH_INTERVAL: buffered stdout into the pipe (the pump posts it), and
        stderr output still in q posted."""
        while True:
            time.sleep(FLUSH_INTERVAL)
            if self.q:
                self.post()
            self.flush_stdout()


# --------------------------------------------------------------------------------------------
# The objects user code sees as sys.stdout / sys.stderr / sys.stdin, and input().
# --------------------------------------------------------------------------------------------


class State:
    def __init__(self):
        self.lock = threading.Condition()
        self.run = None  # the active run: {"id", "mode", ...}; one at a time
        self.user = False  # the main thread is inside query code (a KeyboardInterrupt may land)
        self.interrupt = False  # an interrupt waits for a safe point in runner code
        self.waiting = None  # run id of an input() waiting for its line
        self.answer = None  # the line that input() gets
        self.child = None  # Popen of the running batch command
        self.main = threading.get_ident()


STATE = State()
OUT = None  # Output
TRANSPORT = None  # Transport


def check_interrupt():
    """A safe point: raises the KeyboardInterrupt an interrupt deferred while runner code ran."""
    if STATE.interrupt and STATE.user and threading.get_ident() == STATE.main:
        STATE.interrupt = False
        raise KeyboardInterrupt


class OutStream:
    """sys.stderr for user code (sys.stdout is OUT.stdout, a C-level TextIOWrapper): every write
    goes into the ordered output queue at once, after the stdout written before it."""

    encoding = "utf-8"
    errors = "strict"
    newlines = None
    line_buffering = False
    write_through = True
    closed = False

    def __init__(self, stream, fd):
        self.name = "<%s>" % stream
        self._stream = stream
        self._fd = fd
        self.buffer = _BinaryOut(self)
        out = OUT.write
        state = STATE

        def write(s):
            if s.__class__ is not str:
                if not isinstance(s, str):
                    raise TypeError("write() argument must be str, not %s" % type(s).__name__)
                s = str(s)
            if s:
                out(stream, s)
                if state.interrupt:
                    check_interrupt()
            return len(s)

        self.write = write  # an instance attribute: no bound method per call

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        # Written already; the flusher posts it within FLUSH_INTERVAL.
        if STATE.interrupt:
            check_interrupt()

    def fileno(self):
        return self._fd

    def isatty(self):
        return False

    def readable(self):
        return False

    def writable(self):
        return True

    def seekable(self):
        return False

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class _BinaryOut:
    """sys.stderr.buffer: bytes decoded as UTF-8 (a split character waits for its rest)."""

    def __init__(self, text):
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._lock = threading.Lock()

    def write(self, b):
        b = bytes(b)
        with self._lock:
            s = self._decoder.decode(b)
        if s:
            self._text.write(s)
        return len(b)

    def flush(self):
        pass

    def fileno(self):
        return self._text.fileno()

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False


def user_input(prompt=""):
    """input() for query code: asks the agent with `waiting-input` and waits for `input`."""
    prompt = str(prompt)
    with STATE.lock:
        run = STATE.run
        if run is None or run["mode"] != "query":
            raise EOFError("no run is active to read input for")
        if STATE.waiting is not None:
            raise RuntimeError("input() is already waiting in another thread")
        STATE.waiting = run["id"]
        STATE.answer = None
    try:
        if prompt:
            # As Python's input() does, and as Backend.AI's kernels do: the prompt is output, so
            # every client shows it (it is also in waiting-input, for clients that want it apart).
            sys.stdout.write(prompt)
            sys.stdout.flush()
        OUT.sync()
        TRANSPORT.post("waiting-input", {"id": run["id"], "prompt": prompt})
        with STATE.lock:
            while STATE.answer is None:
                STATE.lock.wait(0.1)
                if STATE.interrupt:
                    check_interrupt()
            return STATE.answer
    finally:
        with STATE.lock:
            STATE.waiting = None
            STATE.answer = None


class InStream:
    """sys.stdin for query code: each line read is one `input` from the agent."""

    encoding = "utf-8"
    errors = "strict"
    name = "<stdin>"
    closed = False

    def readline(self, size=-1):
        return user_input("") + "\n"

    def read(self, size=-1):
        return self.readline()

    def readlines(self, hint=-1):
        return [self.readline()]

    def __iter__(self):
        return self

    def __next__(self):
        return self.readline()

    def fileno(self):
        return 0

    def isatty(self):
        return False

    def readable(self):
        return True

    def writable(self):
        return False

    def close(self):
        pass


# --------------------------------------------------------------------------------------------
# Running code.
# --------------------------------------------------------------------------------------------


def on_sigint(signum, frame):
    """SIGINT is only sent (to the main thread) by an interrupt request. It becomes a
    KeyboardInterrupt in user code; inside runner code (a print, input()) it is deferred to the
    next safe point, so the runner's own state is never torn."""
    if not STATE.user:
        return
    if frame is not None and frame.f_globals is RUNNER_GLOBALS:
        return
    STATE.interrupt = False
    raise KeyboardInterrupt


def _strip_runner_frames(te, seen=None):
    seen = seen if seen is not None else set()
    if te is None or id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename != RUNNER_FILE])
    _strip_runner_frames(te.__cause__, seen)
    _strip_runner_frames(te.__context__, seen)
    for sub in getattr(te, "exceptions", None) or ():
        _strip_runner_frames(sub, seen)


def print_exception(e):
    try:
        te = traceback.TracebackException(type(e), e, e.__traceback__, compact=True)
        _strip_runner_frames(te)
        text = "".join(te.format())
    except Exception:  # a broken __str__ must not take the runner down
        text = "%s: <exception str() failed>\n" % type(e).__name__
    OUT.write("stderr", text)


class Runner:
    def __init__(self):
        self.module = types.ModuleType("__main__")
        self.module.__dict__["__builtins__"] = __builtins__
        self.ns = self.module.__dict__
        self.cells = 0
        self.jobs = collections.deque()
        self.jobs_cond = threading.Condition()

    def submit(self, run):
        with self.jobs_cond:
            self.jobs.append(run)
            self.jobs_cond.notify()

    def loop(self):
        while True:
            with self.jobs_cond:
                while not self.jobs:
                    self.jobs_cond.wait()
                run = self.jobs.popleft()
            try:
                self.execute(run)
            except KeyboardInterrupt:
                # A stray interrupt landed in runner code after the run ended; nothing to undo.
                pass

    def execute(self, run):
        OUT.sync()  # leftovers belong to the previous run
        OUT.run_id = run["id"]
        code = 1
        try:
            if run["mode"] == "query":
                code = self.query(run["code"])
            else:
                code = self.batch(run)
        except KeyboardInterrupt:
            # An interrupt that arrived between the user code's end and the bookkeeping.
            STATE.user = False
            OUT.write("stderr", "KeyboardInterrupt\n")
            code = 1
        finally:
            STATE.user = False
            STATE.interrupt = False
        OUT.sync()
        with STATE.lock:
            STATE.run = None  # before `finished`: the agent may send the next exec right away
            STATE.child = None
        TRANSPORT.post("finished", {"id": run["id"], "exitCode": code})

    def query(self, source):
        self.cells += 1
        filename = "<cell %d>" % self.cells
        lines = source.splitlines(True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        linecache.cache[filename] = (len(source), None, lines, filename)
        try:
            compiled = compile(source, filename, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, OverflowError) as e:
            print_exception(e)
            return 1
        sys.modules["__main__"] = self.module
        try:
            STATE.user = True
            try:
                if STATE.interrupt:  # arrived before the code started
                    STATE.interrupt = False
                    raise KeyboardInterrupt
                exec(compiled, self.ns)
            finally:
                STATE.user = False
        except SystemExit as e:
            # sys.exit() ends the cell, not the interpreter: the exit code becomes the run's.
            c = e.code
            if c is None:
                return 0
            if isinstance(c, int) and not isinstance(c, bool):
                return c & 0xFF
            OUT.write("stderr", "%s\n" % (c,))
            return 1
        except BaseException as e:
            print_exception(e)
            return 1
        return 0

    def batch(self, run):
        build = run.get("build")
        if build:
            code = self.shell(build)
            if code != 0:
                return code
            OUT.sync()
            TRANSPORT.post("build-finished", {"id": run["id"], "exitCode": 0})
        return self.shell(run["exec"])

    def shell(self, command):
        """Runs `/bin/sh -c command` in its own process group, stdin /dev/null, streaming its
        stdout/stderr; returns the exit code as a shell reports it (128+N for signal N)."""
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command],
                cwd=HOME if os.path.isdir(HOME) else None,
                stdin=subprocess.DEVNULL,
                stdout=w_out,
                stderr=w_err,
                process_group=0,
            )
        except OSError as e:
            for fd in (r_out, w_out, r_err, w_err):
                os.close(fd)
            OUT.write("stderr", "cannot run /bin/sh: %s\n" % e)
            return 127
        os.close(w_out)
        os.close(w_err)
        with STATE.lock:
            STATE.child = proc
        pipes = {
            r_out: ("stdout", codecs.getincrementaldecoder("utf-8")("replace")),
            r_err: ("stderr", codecs.getincrementaldecoder("utf-8")("replace")),
        }
        poller = select.poll()
        for fd in pipes:
            poller.register(fd, select.POLLIN)
        quiet_since = None  # set once the command has exited
        while pipes:
            events = poller.poll(50 if quiet_since is None else 20)
            for fd, _ in events:
                stream, decoder = pipes[fd]
                data = os.read(fd, 65536)
                text = decoder.decode(data, final=not data)
                if text:
                    OUT.write(stream, text)
                if not data:
                    poller.unregister(fd)
                    os.close(fd)
                    del pipes[fd]
            if proc.poll() is not None:
                now = time.monotonic()
                if quiet_since is None or events:
                    quiet_since = now
                # The command is gone. Once its process group is empty EOF is near (give up
                # only if nothing comes for a second: an escaped daemon holds the pipe); a
                # background job it left behind may keep the pipes open, so then stop as soon
                # as it has been quiet for a moment.
                if now - quiet_since > (0.1 if self._group_alive(proc.pid) else 1.0):
                    break
        for fd in pipes:
            os.close(fd)  # a leftover background process gets EPIPE/SIGPIPE if it writes on
        code = proc.wait()
        return 128 - code if code < 0 else code

    @staticmethod
    def _group_alive(pgid):
        try:
            os.killpg(pgid, 0)
            return True
        except OSError:
            return False


RUNNER = Runner()


# --------------------------------------------------------------------------------------------
# Requests.
# --------------------------------------------------------------------------------------------


def send_error(msg_id, text):
    TRANSPORT.send_raw({"op": "error", "id": msg_id, "msg": text})


def op_ping(msg):
    TRANSPORT.send_raw({"op": "pong", "id": msg.get("id")})


def op_exec(msg):
    run_id = msg.get("id")
    if not valid_id(run_id):
        return send_error(None, "exec needs an id (a non-empty string or an integer)")
    mode = msg.get("mode")
    if mode == "query":
        code = msg.get("code")
        if not isinstance(code, str):
            return send_error(run_id, "query needs code (a string)")
        run = {"id": run_id, "mode": "query", "code": code}
    elif mode == "batch":
        build, cmd = msg.get("build"), msg.get("exec")
        if build is not None and not isinstance(build, str):
            return send_error(run_id, "batch build must be a string or null")
        if not isinstance(cmd, str):
            return send_error(run_id, "batch needs exec (a string)")
        run = {"id": run_id, "mode": "batch", "build": build, "exec": cmd}
    else:
        return send_error(run_id, "unknown mode: %r (query or batch)" % (mode,))
    with STATE.lock:
        if STATE.run is not None:
            return send_error(run_id, "run %s is still active (one run at a time)" % json.dumps(STATE.run["id"]))
        STATE.run = run
    RUNNER.submit(run)


def op_input(msg):
    run_id, text = msg.get("id"), msg.get("text")
    if not isinstance(text, str):
        return send_error(run_id, "input needs text (a string)")
    with STATE.lock:
        if STATE.waiting is None or STATE.waiting != run_id or STATE.answer is not None:
            return send_error(run_id, "no run %s is waiting for input" % json.dumps(run_id))
        STATE.answer = text
        STATE.lock.notify_all()


def op_interrupt(msg):
    run_id = msg.get("id")
    with STATE.lock:
        run = STATE.run
        if run is None or run["id"] != run_id:
            return send_error(run_id, "no active run %s to interrupt" % json.dumps(run_id))
        child = STATE.child
        if run["mode"] == "query":
            STATE.interrupt = True
            STATE.lock.notify_all()
            threading.Thread(target=_deliver_interrupt, args=(run,), name="interrupt", daemon=True).start()
            return
    if child is not None and child.poll() is None:
        try:
            os.killpg(child.pid, signal.SIGINT)
        except OSError:
            pass

        def kill():
            if child.poll() is None:
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except OSError:
                    pass

        t = threading.Timer(KILL_AFTER, kill)
        t.daemon = True
        t.start()


def _deliver_interrupt(run):
    """SIGINT to the main thread (it also breaks a blocking call such as time.sleep), repeated
    while the interrupt is still pending: it can land in runner code that has no safe point."""
    while True:
        with STATE.lock:
            if STATE.run is not run or not STATE.interrupt:
                return
        signal.pthread_kill(STATE.main, signal.SIGINT)
        time.sleep(0.1)


def _seq_arg(msg, key):
    v = msg.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise ValueError("%s needs %s (a number)" % (msg.get("op"), key))
    return int(v)


def op_ack(msg):
    TRANSPORT.ack(_seq_arg(msg, "upto"))


def op_replay(msg):
    TRANSPORT.replay(_seq_arg(msg, "from"))


HANDLERS = {
    "ping": op_ping,
    "exec": op_exec,
    "input": op_input,
    "interrupt": op_interrupt,
    "ack": op_ack,
    "replay": op_replay,
}


def handle_line(raw):
    try:
        msg = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        send_error(None, "malformed line: %s" % e)
        return
    if not isinstance(msg, dict):
        send_error(None, "malformed line: expected a JSON object")
        return
    msg_id = msg.get("id")
    if not (msg_id is None or isinstance(msg_id, (str, int, float))):
        msg_id = None
    op = msg.get("op")
    handler = HANDLERS.get(op) if isinstance(op, str) else None
    if handler is None:
        send_error(msg_id, "unknown op: %r" % (op,))
        return
    try:
        handler(msg)
    except ValueError as e:
        send_error(msg_id, str(e))
    except Exception as e:  # a bad request must never take the runner down
        send_error(msg_id, "%s failed: %s: %s" % (op, type(e).__name__, e))


def serve(stdin):
    while True:
        raw = stdin.readline(MAX_LINE + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            # Skip the rest of the oversized line so the next one parses cleanly.
            while raw and not raw.endswith(b"\n"):
                raw = stdin.readline(MAX_LINE + 1)
            send_error(None, "line longer than %d bytes discarded" % MAX_LINE)
            continue
        if raw.strip():
            handle_line(raw)


def reader(stdin):
    try:
        serve(stdin)
    except Exception:
        pass
    # stdin reached EOF (or broke): nothing more will be asked; the runner stays up.


# --------------------------------------------------------------------------------------------
# Start-up.
# --------------------------------------------------------------------------------------------


def drop_privileges():
    """The runner and the code it runs belong to `work` (uid 1000). If started as root (an image
    without USER), switch before anything else; if that is not allowed, carry on as root."""
    if os.getuid() != 0:
        return
    try:
        os.setgroups([])
        os.setgid(WORK_UID)
        os.setuid(WORK_UID)
    except OSError:
        return
    os.environ.update(HOME=HOME, USER="work", LOGNAME="work")


def become_init_child():
    """As PID 1, fork: the parent stays init (reaps orphans, exits on SIGTERM with the runner's
    status otherwise), the child runs the runner."""
    if os.getpid() != 1:
        return
    pid = os.fork()
    if pid == 0:
        return
    signal.signal(signal.SIGTERM, lambda s, f: os._exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            got, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if got == pid:
            code = os.waitstatus_to_exitcode(status)
            # Killed by signal N: 128+N, as shells and Docker report it (an OOM kill reads 137, not 247).
            os._exit(128 - code if code < 0 else code & 0xFF)


FORKED_AWAY = []


def after_fork_in_child():
    # A process forked by user code (multiprocessing, os.fork) has none of the runner's
    # threads: its prints go straight to fd 1/2, which the runner captures. The runner's
    # stdout buffer (flushed before the fork) is left alone, and kept alive: freeing it would
    # flush it, and another thread of the runner may have held its lock at the fork.
    FORKED_AWAY.append(OUT.stdout)
    OUT.stdout = None
    for name, fd in (("stdout", 1), ("stderr", 2)):
        raw = open(fd, "wb", buffering=0, closefd=False)
        setattr(sys, name, io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", write_through=True))
    sys.stdin = open(os.devnull, "r")
    builtins.input = ORIGINAL_INPUT
    signal.signal(signal.SIGINT, signal.default_int_handler)


def install_flush_points():
    """sys.stdout's buffer goes into the capture pipe before anything else can write to fd 1/2
    after it: a fork (os.fork, multiprocessing), a subprocess, os.system, os.posix_spawn and
    os.write to fd 1 or 2. Output written outside these (C code writing to fd 1 itself) keeps
    its place only within FLUSH_INTERVAL."""
    flush = OUT.flush_stdout
    os.register_at_fork(before=flush, after_in_child=after_fork_in_child)

    def flushing(fn):
        def wrapper(*args, **kwargs):
            flush()
            return fn(*args, **kwargs)

        return functools.update_wrapper(wrapper, fn)

    for name in ("system", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            setattr(os, name, flushing(getattr(os, name)))
    # subprocess binds _posixsubprocess.fork_exec (and os.posix_spawn) into its own module at
    # import; every Popen starts its child in _execute_child.
    subprocess.Popen._execute_child = flushing(subprocess.Popen._execute_child)

    def write(fd, data):
        if fd == 1 or fd == 2:
            flush()
        return RAW_WRITE(fd, data)

    os.write = functools.update_wrapper(write, RAW_WRITE)


def main():
    global OUT, TRANSPORT
    drop_privileges()
    become_init_child()
    # SIGTERM keeps its default action (the runner is never PID 1: become_init_child). A
    # Python-level handler would be inherited by every process user code forks, and a SIGTERM
    # reaching such a child just after its fork (Pool.terminate() of a worker not yet
    # scheduled) or just before a blocking call only sets a flag nobody checks: the worker,
    # and the run joining it, would hang for ever.
    try:
        os.chdir(HOME)
    except OSError:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    proto_in = os.dup(0)  # non-inheritable: subprocesses never see the protocol
    proto_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

    TRANSPORT = Transport(proto_out)
    OUT = Output(TRANSPORT)
    OUT.capture_fds()
    sys.stdout = OUT.stdout
    sys.stderr = OutStream("stderr", 2)
    sys.stdin = InStream()
    builtins.input = user_input
    signal.signal(signal.SIGINT, on_sigint)
    install_flush_points()

    TRANSPORT.send_raw({"op": "ready", "language": LANGUAGE, "version": VERSION, "pid": os.getpid()})
    threading.Thread(target=reader, args=(os.fdopen(proto_in, "rb", buffering=1 << 16),), name="reader", daemon=True).start()
    RUNNER.loop()


if __name__ == "__main__":
    main()
