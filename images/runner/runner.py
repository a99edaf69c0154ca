"""flotilla python kernel runner: PID 1 of the python image (`python3 -u /opt/flotilla/runner.py`).

Talks JSON lines with the agent over the container's attached stdin/stdout, one object per
line in both directions (DESIGN.md §8). Stdlib only.

Attach/stdin behaviour this relies on (checked against Docker 20.10, API 1.41): the container
is created with OpenStdin: true, StdinOnce: false, Tty: false. Its stdin is then a pipe owned by
the daemon that outlives every attach: when the agent half-closes its hijacked socket, the
daemon ends that attach (the agent sees the stream end) but does NOT close the pipe; the same
holds when the socket is simply destroyed. The runner never sees EOF and the next attach writes
into the same pipe (checked: ping/pong over a second and third attach). Replies written while
nobody is attached only reach the container log, and every attach gets every reply, so the
agent keeps exactly one attach per kernel. EOF happens only when the container was created
without OpenStdin or with StdinOnce: true (then the first detach closes the pipe for good); the
runner then stays alive until stopped, it just cannot be talked to anymore.

PID 1 gets no default signal dispositions from the kernel, so SIGTERM is handled explicitly.
"""

import json
import os
import signal
import sys
import threading

LANGUAGE = "python"
VERSION = "%d.%d.%d" % sys.version_info[:3]
# A line longer than this is discarded (and reported) instead of being buffered without end.
MAX_LINE = 64 * 1024 * 1024

_out = sys.stdout.buffer
_out_lock = threading.Lock()


def send(msg):
    """The only way anything reaches the agent: one JSON line, written whole under a lock so
    replies and (later) streamed output from several threads never interleave."""
    data = (json.dumps(msg, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "backslashreplace")
    with _out_lock:
        try:
            _out.write(data)
            _out.flush()
        except (OSError, ValueError):
            # Nothing to report to if stdout itself fails; keep serving.
            pass


def send_error(msg_id, text):
    send({"op": "error", "id": msg_id, "msg": text})


def op_ping(msg):
    send({"op": "pong", "id": msg.get("id")})


# op name -> handler(msg). Execute modes (query/batch/input/continue/interrupt) plug in here.
HANDLERS = {
    "ping": op_ping,
}


def handle_line(raw):
    try:
        msg = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        send_error(None, "malformed line: %s" % e)
        return
    if not isinstance(msg, dict):
        send_error(None, "malformed line: expected a JSON object")
        return
    msg_id = msg.get("id")
    op = msg.get("op")
    handler = HANDLERS.get(op) if isinstance(op, str) else None
    if handler is None:
        send_error(msg_id, "unknown op: %r" % (op,))
        return
    try:
        handler(msg)
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


def on_sigterm(signum, frame):
    # Every message is flushed as it is sent, so nothing is lost by skipping interpreter cleanup.
    os._exit(0)


def main():
    signal.signal(signal.SIGTERM, on_sigterm)
    send({"op": "ready", "language": LANGUAGE, "version": VERSION, "pid": os.getpid()})
    serve(sys.stdin.buffer)
    # stdin reached EOF: stay up so the container keeps running until it is stopped.
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
