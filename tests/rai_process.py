"""``rai`` commands run as processes of their own without paying Python's start-up each time.

A ``rai`` subprocess spends most of its second or so importing (Temporal, aioboto3, numpy,
pydantic) before the command does anything. Here a fork server (``python -m
tests.rai_process``) imports every command module once; each command is then a new process
forked from it, with its own pid, environment, stdin (``/dev/null``), stdout and stderr (file
descriptors 0, 1 and 2) and exit code, running ``cli.main.main`` as the ``rai`` console script
does. The fork server starts no threads, event loops or Temporal runtimes, so the child begins
as clean as a new interpreter would after the same imports.

Tests about the console script itself (that it starts, exits, or is killed as an operating
system process) start the real ``rai`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from settings import Settings
from tests.environment import rai_environment

RAI = Path(sys.executable).with_name("rai")
STOP_GRACE_SECONDS = 60.0
REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Finished:
    code: int
    out: str
    err: str


def _become_rai(request: dict[str, object]) -> int:
    """In the forked child: ``rai ARGV`` with the request's environment and files."""
    from cli.main import main

    argv = [str(word) for word in request["argv"]]  # type: ignore[attr-defined]
    env = request["env"]
    assert isinstance(env, dict)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [str(RAI), *argv]
    for path, fd, flags in (
        (os.devnull, 0, os.O_RDONLY),
        (str(request["out"]), 1, os.O_WRONLY | os.O_TRUNC),
        (str(request["err"]), 2, os.O_WRONLY | os.O_TRUNC),
    ):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's usage errors and --help, as the console script
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1


def serve() -> None:
    """The fork server: one JSON request a line on stdin, answered with the child's pid and
    then its exit code (negative: the signal that ended it), one JSON line each."""
    from adapters.processes import freeze_start_up_heap
    from cli.main import GROUPS

    for module in ("cli.main", *GROUPS.values()):
        importlib.import_module(module)
    # What the imports made is never garbage: out of the cyclic collector's sight, so that a
    # child's exit-time gc.collect() (cli.main) walks only what its command made, and forking
    # does not copy the pages of the imports' objects when the collector would touch them.
    freeze_start_up_heap()
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            code = 1
            try:
                code = _become_rai(request)
            except Exception:  # uncaught: a traceback on stderr and exit 1, as Python does
                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        answers.write(json.dumps({"pid": pid}).encode() + b"\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
        answers.flush()


class ForkServer:
    """The test process's fork server, started on first use; one command at a time."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> asyncio.subprocess.Process:
        if self._process is None or self._process.returncode is not None:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.rai_process",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=REPOSITORY,
            )
        return self._process

    async def run(self, env: Mapping[str, str], argv: Sequence[str], within: float) -> Finished:
        """``rai ARGV`` forked with ``env``; killed (``TimeoutError``) after ``within`` s."""
        async with self._lock:
            server = await self._started()
            assert server.stdin is not None
            assert server.stdout is not None
            with tempfile.TemporaryDirectory(prefix="rai-") as directory:
                out, err = os.path.join(directory, "stdout"), os.path.join(directory, "stderr")
                for path in (out, err):
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
                request = {"argv": list(argv), "env": dict(env), "out": out, "err": err}
                pid: int | None = None
                try:
                    server.stdin.write(json.dumps(request).encode() + b"\n")
                    await server.stdin.drain()
                    pid = int(json.loads(await server.stdout.readline())["pid"])
                    answer = await asyncio.wait_for(server.stdout.readline(), within)
                except BaseException:
                    # Timed out, cancelled (a test's time limit) or the server is gone: the
                    # command is killed and the server replaced, so that no later command
                    # reads this one's answer.
                    if pid is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    await self._discard()
                    raise
                code = int(json.loads(answer)["code"])
                with open(out, encoding="utf-8") as o, open(err, encoding="utf-8") as e:  # noqa: ASYNC230 (small local files)
                    return Finished(code, o.read(), e.read())

    async def _discard(self) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
        self._process = None

    async def close(self) -> None:
        if self._process is not None and self._process.returncode is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            await self._process.wait()
        self._process = None


FORK_SERVER = ForkServer()


async def run_rai(env: Mapping[str, str], argv: Sequence[str], *, within: float) -> Finished:
    """``rai ARGV`` forked from the test process's fork server (``ForkServer.run``)."""
    return await FORK_SERVER.run(env, argv, within)


async def start_worker(settings: Settings, log: Path) -> asyncio.subprocess.Process:
    """A real ``rai worker`` process on ``settings`` (as ``RAI_*`` variables), its output
    appended to ``log``: for the tests that kill, replace or watch it as a process."""
    with log.open("ab") as handle:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.main",
            "worker",
            env=rai_environment(settings),
            stdout=handle,
            stderr=handle,
        )


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after ``STOP_GRACE_SECONDS``; nothing if it has exited."""
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()


if __name__ == "__main__":
    serve()
