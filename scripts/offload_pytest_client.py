"""The resident pytest worker's client, and the protocol it speaks with the worker.

Offload runs each pytest batch through the resident worker as

    sh -c SNIPPET DIR SHARED KEY N T PREFIX... ARGS...

and the snippet runs this file with any `python3` (see offload_pytest_worker.py for
the worker and what the arguments mean). The client connects to the worker's socket,
hands over the batch (its stdin, stdout and stderr, working directory, environment and
arguments) and waits for the child's exit code; when no worker listens it starts one,
and when the worker cannot be used it runs the batch as plain `PREFIX ARGS...`.

Every batch pays for this file's start before its first test, so it imports only what
a client needs: modules that load without importing others (no `json`, `socket`,
`subprocess`). A message is its length (4 bytes, big-endian) and then strings joined by
NUL, which no argument, environment variable or path can hold, in UTF-8 with undecodable
bytes kept as surrogate escapes; file descriptors ride along as SCM_RIGHTS.
"""

import os
import struct
import sys
import time

import _socket

START_VARIABLE = "OFFLOAD_RESIDENT_START"
# Set for a warm-up: the client starts the worker, which imports the test modules of
# the targets (directories too); no batch runs. The client returns once they are
# imported, or with the value WARM_START as soon as the worker has the warm-up (a
# remote sandbox's: its exec channel is then free for the batches, which wait for the
# imports in the worker).
WARM_VARIABLE = "OFFLOAD_RESIDENT_WARM"
WARM_START = "start"
EVENT_MARKER = "##offload-event## "


# --- protocol -----------------------------------------------------------------------


def paths_of(directory, key):
    """The worker's files in `directory` (the socket's name relative to it)."""
    base = os.path.join(directory, "resident-" + key)
    return {
        "socket": "resident-" + key + ".sock",
        "off": base + ".off",
        "lock": base + ".lock",
        "log": base + ".log",
        "pid": base + ".pid",
        "start": base + ".start",
        "python": base + ".python",
    }


def connect(directory, name):
    """A connection to the worker listening on `directory/name`, or None. The path is
    given relative to `directory`: a socket path may not exceed about 100 bytes."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(directory)
        sock.connect(name)
        return sock
    except OSError:
        sock.close()
        return None
    finally:
        os.fchdir(here)
        os.close(here)


def encode(fields):
    return "\0".join(fields).encode("utf-8", "surrogateescape")


def decode(data):
    return data.decode("utf-8", "surrogateescape").split("\0")


def send(sock, fields, fds=()):
    """Sends the strings `fields` (at least one) as one message, with `fds`."""
    data = encode(fields)
    data = struct.pack("!I", len(data)) + data
    ancillary = []
    if fds:
        rights = struct.pack("%di" % len(fds), *fds)
        ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)]
    sent = sock.sendmsg([data], ancillary)
    sock.sendall(data[sent:])


def receive(sock):
    """(fields, fds) of one message, or (None, []) when the peer closed first. Reads
    exactly one message: the next one may already be on its way."""
    size_of_fd = struct.calcsize("i")
    fds = []
    data = b""
    size = None
    while size is None or len(data) < size + 4:
        wanted = (4 if size is None else size + 4) - len(data)
        chunk, ancillary, _flags, _addr = sock.recvmsg(
            min(wanted, 1 << 20), _socket.CMSG_LEN(8 * size_of_fd)
        )
        for level, kind, cdata in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                count = len(cdata) // size_of_fd
                fds.extend(struct.unpack("%di" % count, cdata[: count * size_of_fd]))
        if not chunk:
            for fd in fds:
                os.close(fd)
            return None, []
        data += chunk
        if size is None and len(data) >= 4:
            size = struct.unpack("!I", data[:4])[0]
    return decode(data[4 : size + 4]), fds


def request_fields(warm, prefix, args, targets, env, cwd):
    """A batch (or a warm-up) as message fields; `request_of` reads them back."""
    fields = ["warm" if warm else "batch", cwd, str(targets), str(len(prefix))]
    fields += prefix
    fields.append(str(len(args)))
    fields += args
    for name, value in env.items():
        fields += [name, value]
    return fields


def request_of(fields):
    """The request `request_fields` wrote, as a dict."""
    count = int(fields[3])
    prefix = fields[4 : 4 + count]
    args_at = 5 + count
    args = fields[args_at : args_at + int(fields[4 + count])]
    env = fields[args_at + len(args) :]
    return {
        "warm": fields[0] == "warm",
        "cwd": fields[1],
        "targets": int(fields[2]),
        "prefix": prefix,
        "args": args,
        "env": dict(zip(env[0::2], env[1::2])),
    }


def say_fallback(reason):
    """Says on stderr, as an Offload event, why the worker is not used."""
    import json  # seldom needed: not worth its import in every client

    event = {"event": "resident-fallback", "id": "", "message": reason}
    sys.stderr.write(EVENT_MARKER + json.dumps(event) + "\n")
    sys.stderr.flush()


def write_off(path, reason):
    """Records why the worker is not used; True when this call recorded it first."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(reason + "\n")
    return True


def run_plain(argv, env=None):
    """Replaces this process with `argv` (with `env`, else this environment)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, os.environ if env is None else env)
    except OSError as err:
        sys.stderr.write("offload: cannot run %s: %s\n" % (argv[0], err))
        sys.stderr.flush()
        os._exit(127)


# --- client -------------------------------------------------------------------------


def client(argv):
    directory, key, count, targets = argv[0], argv[1], int(argv[2]), int(argv[3])
    prefix, args = argv[4 : 4 + count], argv[4 + count :]
    paths = paths_of(directory, key)
    plain = prefix + args

    warm = os.environ.get(WARM_VARIABLE, "")

    def fall_back(reason):
        """Runs the batch as plain pytest (a warm-up ends); says `reason` when it is
        news."""
        if reason and write_off(paths["off"], reason):
            say_fallback(reason)
        if warm:
            sys.exit(0)
        run_plain(plain)

    if os.path.exists(paths["off"]):
        fall_back(None)
    if not hasattr(os, "fork") or not hasattr(_socket, "AF_UNIX"):
        fall_back("this platform has no fork() or Unix sockets")
    sock = connect(directory, paths["socket"])
    request = request_fields(warm, prefix, args, targets, dict(os.environ), os.getcwd())
    if sock is None:
        sock = _start_worker(directory, key, paths, plain, request, fall_back)
    elif warm:
        # The worker is running already: there is nothing to warm up.
        sys.exit(0)
    if warm == WARM_START:
        _hand_over(sock, request)
        sys.exit(0)
    code = _run_batch(sock, request, fall_back)
    if code is None:
        # The worker went away before it took the batch (it was ending): run it plainly.
        fall_back(None)
    sys.exit(code)


def _start_worker(directory, key, paths, command, request, fall_back):
    """Starts the worker (unless a concurrent batch did meanwhile); its connection."""
    import fcntl

    lock = os.open(paths["lock"], os.O_RDWR | os.O_CREAT, 0o644)
    # A batch that finds another one starting the worker waits for it: one start-up
    # on the machine, not one per batch.
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        sock = connect(directory, paths["socket"])
        if sock is not None:
            return sock
        if os.path.exists(paths["off"]):
            fall_back(None)
        try:
            os.unlink(os.path.join(directory, paths["socket"]))
        except OSError:
            pass
        # What the worker is to be: the batch that starts it (see `request_of`).
        with open(paths["start"], "wb") as out:
            out.write(encode(request))
        env = dict(os.environ)
        env[START_VARIABLE] = key + ":" + directory
        try:
            worker = _spawn(command, env, paths["log"])
        except OSError as err:
            fall_back("cannot start `%s`: %s" % (command[0], err))
        while True:
            sock = connect(directory, paths["socket"])
            if sock is not None:
                return sock
            pid, status = os.waitpid(worker, os.WNOHANG)
            if pid == worker:
                if os.path.exists(paths["off"]):
                    with open(paths["off"], encoding="utf-8", errors="replace") as off:
                        reason = off.read().strip()
                    say_fallback(reason)
                    fall_back(None)
                code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
                fall_back(
                    "the worker's pytest ended (exit code %s) before it reached collection: "
                    "%s (see %s; a `command` that is not pytest with Offload's plugin, or "
                    "a pytest that fails before collecting, does this)"
                    % (code, _last_line(paths["log"]), paths["log"])
                )
            time.sleep(0.002)
    finally:
        os.close(lock)


def _spawn(argv, env, log_path):
    """Starts `argv` with `env` in a session of its own, its stdin /dev/null, its stdout
    and stderr appended to `log_path`, no other descriptor open; its pid. (Not through
    `subprocess`, whose import costs the first batch tens of milliseconds.)"""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    # What this process holds open besides its stdio (descriptors it inherited are
    # inheritable) must not reach the worker, which outlives it.
    listing = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    try:
        held = [int(fd) for fd in os.listdir(listing)]
    except (OSError, ValueError):
        held = list(range(3, 256))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        os.close(log)
        os.close(null)
        raise
    if pid != 0:
        os.close(log)
        os.close(null)
        return pid
    try:
        os.setsid()
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        for fd in held:
            if fd > 2:
                try:
                    os.close(fd)
                except OSError:
                    pass
        os.execvpe(argv[0], argv, env)
    except OSError as err:
        os.write(2, ("offload: cannot run %s: %s\n" % (argv[0], err)).encode())
    finally:
        os._exit(127)


def _last_line(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"


def _hand_over(sock, request):
    """Gives the worker a warm-up whose answer no one waits for, with /dev/null for its
    stdio: a worker holding this client's (an exec channel's pipes) would keep the exec
    from ending until the imports are done."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        send(sock, request, fds=(null, null, null))
    except OSError:
        pass  # The worker went away: the batches start one.
    os.close(null)


def _run_batch(sock, request, fall_back):
    """Hands the batch to the worker; the child's exit code, or None when the worker
    closed the connection before it started the batch."""
    try:
        send(sock, request, fds=(0, 1, 2))
        started, _ = receive(sock)
        if started is None:
            return None
        if started[0] == "warmed":
            return 0
        if started[0] == "fallback":
            # The worker recorded why in the `.off` file; this batch says it.
            sock.close()
            say_fallback(started[1])
            fall_back(None)
        done, _ = receive(sock)
    except OSError:
        return None
    if done is None:
        sys.stderr.write("offload: the resident pytest worker ended while it ran this batch\n")
        return 1
    return int(done[1])


if __name__ == "__main__":
    client(sys.argv[1:])
