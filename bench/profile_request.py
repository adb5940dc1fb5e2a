"""Where a small GET's time goes in the proxy: cProfile around ``python proxy.py`` while wrk drives it (issue 19).

    python bench/profile_request.py [--seconds 10] [--conns 64] [--top 25] [--stats FILE] [--naive]

Starts bench/upstream.py (plain HTTP) and the proxy, configured as bench/run.py configures it and pinned
the same way, but with the proxy's ``main()`` run under ``cProfile``; wrk sends GET api/status at ``--conns``
connections for ``--seconds``. Then the proxy gets SIGINT, as from Ctrl-C, and must exit with 0 through its
normal shutdown (the profile is written after ``main()`` returns, so a proxy that does not stop cleanly
writes none and this script fails). Only wrk's window is profiled (SIGUSR1 before it, SIGUSR2 after it).
``--naive``: the same for bench/naive_relay.py. Prints, as Markdown: the split of the profiled time between
the program's own code, aiohttp, asyncio/uvloop and the rest, and the top functions by own time (tottime) and
by cumulative time. cProfile's hooks slow every Python call several-fold, so read shares, not microseconds.
"""

from __future__ import annotations

import argparse
import atexit
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench import run  # noqa: E402
from bench.processes import CLEANUPS, cleanup, exit_on_signal  # noqa: E402

# Run by the profiled process (argv: repository, stats file, module, the program's own argv): the module's main()
# as its script calls it, profiling on from SIGUSR1 to SIGUSR2 (the load's window: startup and shutdown are not
# the request path), the profile dumped only once main() has returned.
_PROFILED_MAIN = """
import cProfile, importlib, signal, sys
sys.path.insert(0, sys.argv[1])
stats_path, module = sys.argv[2], sys.argv[3]
sys.argv = sys.argv[4:]
main = importlib.import_module(module).main
profile = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
signal.signal(signal.SIGUSR2, lambda *_: profile.disable())
code = main()
profile.dump_stats(stats_path)
sys.exit(code)
"""
# Which part of the stack a function belongs to, by the path of its file (first match wins).
_GROUPS = (("the proxy's own code", ("jupyter_dev_proxy",)),
           ("the naive relay's own code", ("naive_relay",)),
           ("aiohttp (and multidict, yarl)", ("aiohttp", "multidict", "yarl", "propcache")),
           ("asyncio / uvloop", ("asyncio", "uvloop")))
_SIGINT_EXIT_S = 30.0  # the proxy's shutdown closes its pools and listeners; far less than this


def _group(filename: str) -> str:
    for name, parts in _GROUPS:
        if any(f"/{p}/" in filename or f"{p}." in filename for p in parts):
            return name
    if filename == "~":
        return "C functions called from Python (socket writes, parsers, ...)"
    return "the rest (stdlib, logging, ssl, ...)"


def _where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return f"`{name}`"
    if filename.startswith(str(run.REPO)):
        path = filename.removeprefix(str(run.REPO) + "/")
    else:
        path = re.sub(r"^.*/(site-packages|python3\.\d+)/", "", filename)
    return f"`{name}` ({path}:{line})"


def report(stats_path: Path, top: int) -> str:
    stats = pstats.Stats(str(stats_path))
    table = stats.stats  # type: ignore[attr-defined]  # {func: (cc, nc, tottime, cumtime, callers)}
    total = stats.total_tt  # type: ignore[attr-defined]
    groups: dict[str, float] = {}
    for func, (_, _, tottime, _, _) in table.items():
        groups[_group(func[0])] = groups.get(_group(func[0]), 0.0) + tottime
    out = [f"Profiled time {total:.2f} s (own time of every function, summed). Calls: a coroutine counts once "
           "per resumption, so a request's handler coroutines count about twice.", "",
           "| part of the stack | share of own time |", "|---|---|"]
    out += [f"| {name} | {t / total:.1%} |" for name, t in sorted(groups.items(), key=lambda kv: -kv[1])]
    for key, title in ((2, "tottime (own time)"), (3, "cumtime (with callees)")):
        out += ["", f"Top {top} by {title}:", "", "| function | calls | tottime share | cumtime share |",
                "|---|---|---|---|"]
        for func, (_, calls, tottime, cumtime, _) in sorted(table.items(), key=lambda kv: -kv[1][key])[:top]:
            out.append(f"| {_where(func)} | {calls:,} | {tottime / total:.1%} | {cumtime / total:.1%} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="how long wrk drives the proxy (default 10)")
    parser.add_argument("--conns", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--top", type=int, default=25, help="functions per table (default 25)")
    parser.add_argument("--stats", help="keep the pstats file here (default: removed with the temp dir)")
    parser.add_argument("--naive", action="store_true", help="profile bench/naive_relay.py instead of the proxy")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (apt-get install wrk)")
    run._PIN = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if run._PIN:
        os.sched_setaffinity(0, {run.REST_CORE})
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, exit_on_signal)
    signal.signal(signal.SIGINT, exit_on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="jdp-profile-"))
    CLEANUPS.insert(0, lambda: shutil.rmtree(workdir, ignore_errors=True))
    stats_path = Path(args.stats).resolve() if args.stats else workdir / "proxy.pstats"

    up, _ = run.start_synthetic(workdir)
    profiled = [sys.executable, "-c", _PROFILED_MAIN, str(run.REPO), str(stats_path)]
    if args.naive:
        cand = run.start_naive(up, workdir, "api/status", argv=[*profiled, "bench.naive_relay", "naive_relay.py"])
    else:
        cand = run.start_proxy(up, workdir, "api/status", argv=[*profiled, "jupyter_dev_proxy.cli", "proxy.py"])
    run.wrk(cand, "api/status", args.conns, 1)  # warm-up: the proxy's pool to the upstream
    assert cand.proc is not None
    os.kill(cand.proc.pid, signal.SIGUSR1)
    load = run.wrk(cand, "api/status", args.conns, args.seconds)
    os.kill(cand.proc.pid, signal.SIGUSR2)
    os.kill(cand.proc.pid, signal.SIGINT)
    try:
        code = cand.proc.wait(timeout=_SIGINT_EXIT_S)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"the proxy did not stop within {_SIGINT_EXIT_S:.0f} s of SIGINT") from None
    log = (workdir / f"{cand.kind}-http.log").read_text()[-1500:]
    written = stats_path.is_file() and pstats.Stats(str(stats_path)).total_tt > 0  # type: ignore[attr-defined]
    if code != 0 or not written:
        raise SystemExit(f"the proxy exited with {code} after SIGINT (profile written: {written}); "
                         f"its log: {log}")
    print(f"{time.strftime('%Y-%m-%d %H:%M %Z')}: wrk -t1 -c{args.conns} -d{args.seconds}s GET api/status "
          f"through the profiled {cand.kind}: {load['rps']:.0f} req/s, p50 {load['p50_us']:.0f} µs; it exited "
          f"with {code} on SIGINT; load average {os.getloadavg()[0]:.2f}")
    print()
    print(report(stats_path, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
