"""A CPU sampler: where a Python process spends its CPU time, not its wall-clock time.

``python -m bench.cpu_sampler OUT -- -m entrypoints.cli serve ...`` runs the module after ``--`` with a
``SIGPROF`` timer (``setitimer(ITIMER_PROF)``): the kernel fires it after every *interval* of CPU time
the process consumed, in user or system mode, so a process that waits (for the database, the broker, or
for one of the machine's cores while other processes hold them) is not sampled at all. A wall-clock
sampler such as py-spy counts a task waiting for a core as running, and on a loaded 2-core machine puts
that wait in whatever the task last ran (asyncpg, most of the time).

At exit (normal, ``SIGTERM`` or ``SIGINT``) it writes OUT, one line per distinct stack in the collapsed
format that flame graph tools read (``frame;frame;frame count``), and OUT.txt, the top functions by
self and by inclusive samples.

Limits: the stack recorded is the main thread's (the signal is handled there, between bytecodes), so
CPU spent by another thread (aiosqlite's, an executor's) is counted where the main thread was, usually
waiting in ``select``; a C call (lxml, OpenSSL, hashlib) is counted at the Python line that made it.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import os
import runpy
import signal
import sys
import time
from pathlib import Path
from types import FrameType

__all__ = ["CpuSampler", "main"]


def _label(frame: FrameType) -> str:
    code = frame.f_code
    module = frame.f_globals.get("__name__", "?")
    return f"{module}.{code.co_qualname}"


class CpuSampler:
    """Collects the main thread's stack every *interval_s* of the process's CPU time."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
        self.samples = 0
        self._cpu_at_start = 0.0

    def _on_tick(self, _signum: int, frame: FrameType | None) -> None:
        stack: list[str] = []
        while frame is not None:
            stack.append(_label(frame))
            frame = frame.f_back
        stack.reverse()
        self.stacks[tuple(stack)] += 1
        self.samples += 1

    def start(self) -> None:
        self._cpu_at_start = time.process_time()
        signal.signal(signal.SIGPROF, self._on_tick)
        signal.setitimer(signal.ITIMER_PROF, self.interval_s, self.interval_s)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)

    def write(self, out: Path, top: int = 60) -> None:
        out.write_text(
            "".join(f"{';'.join(stack)} {count}\n" for stack, count in self.stacks.most_common()),
            encoding="utf-8",
        )
        own: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        for stack, count in self.stacks.items():
            if stack:
                own[stack[-1]] += count
            for label in set(stack):
                inclusive[label] += count
        total = max(1, self.samples)
        cpu_s = time.process_time() - self._cpu_at_start
        # The kernel fires the timer at its own tick at the finest (4 ms at HZ=250), whatever is asked.
        lines = [
            f"{self.samples} samples over {cpu_s:.1f} s of the process's CPU "
            f"(one per {1000 * cpu_s / max(1, self.samples):.1f} ms of CPU on average)",
            "",
            "self %  function",
        ]
        lines += [f"{100 * n / total:6.1f}  {label}" for label, n in own.most_common(top)]
        lines += ["", "incl %  function"]
        lines += [f"{100 * n / total:6.1f}  {label}" for label, n in inclusive.most_common(top)]
        out.with_name(out.name + ".txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def smoke() -> None:
    """``--smoke`` (tests/integration/test_bench_smoke.py): sample a busy loop, print the table."""
    sampler = CpuSampler(0.001)
    sampler.start()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        sum(i * i for i in range(1000))
    sampler.stop()
    own: collections.Counter[str] = collections.Counter(s[-1] for s in sampler.stacks.elements() if s)
    print("| function | samples |\n|---|---:|")
    for label, count in own.most_common(5):
        print(f"| {label} | {count} |")


def main(argv: list[str] | None = None) -> None:
    if (argv if argv is not None else sys.argv[1:]) == ["--smoke"]:
        smoke()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="collapsed stacks; OUT.txt gets the summary")
    parser.add_argument("--interval-ms", type=float, default=2.0)
    parser.add_argument("target", nargs=argparse.REMAINDER, help="-- -m MODULE ARGS... or -- SCRIPT ARGS...")
    args = parser.parse_args(argv)
    target = args.target[1:] if args.target[:1] == ["--"] else args.target
    if not target:
        parser.error("nothing to run: give -- -m MODULE ARGS... or -- SCRIPT ARGS...")
    sampler = CpuSampler(args.interval_ms / 1000)
    written = False

    def write() -> None:
        nonlocal written
        if not written:
            written = True
            sampler.stop()
            sampler.write(args.out)

    atexit.register(write)
    sampler.start()
    if target[0] == "-m":
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = target
        runpy.run_path(target[0], run_name="__main__")
    write()


if __name__ == "__main__":
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
