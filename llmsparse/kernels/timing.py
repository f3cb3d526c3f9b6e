"""GPU timing shared by the dispatcher and the benchmarks.

Times are GPU times of CUDA-graph replays (launch gaps removed, host overhead excluded), the median
of several replays, each replay cycling through several argument sets so that repeated calls do not
measure the L2 cache (weights rotate through at least ``2 x L2`` bytes where memory allows).
"""
from __future__ import annotations

import math
import statistics
from typing import Callable, Sequence

import torch


def l2_bytes(device=None) -> int:
    props = torch.cuda.get_device_properties(device or torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 50 * 2**20) or 50 * 2**20)


def rotation_count(bytes_per_set: int, budget_bytes: int | None = None, max_sets: int = 8) -> int:
    """How many copies of a weight to rotate through so that they overflow L2 twice."""
    target = 2 * l2_bytes() + 1
    n = -(-target // max(bytes_per_set, 1))
    if budget_bytes is not None:
        n = min(n, max(1, budget_bytes // max(bytes_per_set, 1)))
    return int(max(1, min(max_sets, n)))


def _eager_ms(fn: Callable, args_list: Sequence[tuple], iters: int = 3) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        for a in args_list:
            fn(*a)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / (iters * len(args_list))


def host_ms(fn: Callable, args_list: Sequence[tuple], calls: int = 2) -> float:
    """Wall-clock milliseconds of one eager call of ``fn(*args_list[0])`` up to its completion on the GPU
    (best of ``calls``). What a caller that does not capture graphs waits; catches paths whose host-side
    setup dwarfs their GPU time."""
    import time

    best = math.inf
    for _ in range(calls):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn(*args_list[0])
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) * 1e3)
    return best


def warm_up(fn: Callable, args_list: Sequence[tuple] = ((),), n: int = 2) -> None:
    """``fn(*args)`` ``n`` times for each of ``args_list`` on a side stream (what CUDA-graph capture wants before it:
    lazy initialisation, compilation and allocations done outside the capture), then joined and synchronized."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(n):
            for a in args_list:
                fn(*a)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()


def error_line(e: BaseException, limit: int = 300) -> str:
    """An exception as one line for a results file: its type and the first line of its message."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:limit]


def time_call(fn: Callable, args_list: Sequence[tuple], *, target_ms: float = 2.0, replays: int = 7,
              use_graph: bool = True, warmup: int = 2, info: dict | None = None) -> float:
    """Median milliseconds per call of ``fn(*args)``, args cycling over ``args_list``.

    With ``use_graph`` the calls are captured in one CUDA graph (enough calls to fill about
    ``target_ms``) and the graph's replays are timed with events; if capture fails the calls are
    timed eagerly instead (same events, same median); ``info`` (a dict), when given, gets ``graph``
    (whether the timing is of graph replays) and ``graph_error`` (why capture failed).
    """
    info = {} if info is None else info
    info["graph"] = False
    warm_up(fn, args_list, warmup)
    one = max(_eager_ms(fn, args_list, iters=1), 1e-3)
    if one * len(args_list) > 10 * target_ms:  # a slow candidate (e.g. a poor cuSPARSELt algorithm):
        args_list, replays = list(args_list)[:1], min(replays, 3)  # bound what measuring it costs
    reps = int(max(1, min(200, target_ms / (one * len(args_list)))))
    calls = reps * len(args_list)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    if use_graph:
        try:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for _ in range(reps):
                    for a in args_list:
                        fn(*a)
            for _ in range(3):  # also lets the clocks ramp up after host-side gaps
                g.replay()
            torch.cuda.synchronize()
            for _ in range(replays):
                start.record()
                g.replay()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / calls)
            del g
            info["graph"] = True
            return statistics.median(times)
        except Exception as e:  # capture not possible: fall back to eager timing
            info["graph_error"] = error_line(e)
            torch.cuda.synchronize()
            times = []
    for _ in range(replays):
        start.record()
        for _ in range(reps):
            for a in args_list:
                fn(*a)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def event_ms(fn: Callable[[], object]) -> float:
    """GPU milliseconds of one call of ``fn`` (CUDA events around it, synchronized)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def interleaved_ms(calls: dict[str, Callable[[], object]], rounds: int = 10,
                   timer: Callable[[Callable[[], object]], float] | None = None) -> dict[str, list[float]]:
    """Each of ``calls`` timed once per round, in turn, the order reversed every other round (A B, B A, A B ...), so
    that a drift of the GPU's speed over the measurement (the H100's dense prefill ran up to 5% slower in a second pass a
    few minutes after the first) falls on all of them alike and none always follows the other (with two calls and an even number
    of rounds, a steady drift moves both medians alike). Returns each one's times in
    milliseconds, in round order; ``timer(fn) -> ms`` defaults to :func:`event_ms` (meant for CUDA-graph replays)."""
    if rounds < 1 or not calls:
        raise ValueError(f"need at least one call and one round, got {len(calls)} and {rounds}")
    timer = timer or event_ms
    names = list(calls)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else reversed(names):
            out[n].append(float(timer(calls[n])))
    return out
