"""The benchmarks' shared data, and, printed after them, each one's median time as a ratio to its group's
baseline.

A benchmark names its baseline with ``benchmark.extra_info["baseline"] = True``; all benchmarks of
one ``benchmark.group`` ran in the same session, so the ratios compare like with like. A benchmark that
timed two things in alternation (``benchmark.extra_info["paired"]``) prints their own ratio, and one
that timed several in turns (``benchmark.extra_info["round_robin"]``) each one's ratio to the first (or to
what its ``"against"`` names); either may give a ratio's ``"target"``, printed with whether the median (or
the upper quartile) met it, and the paired ones judged on their upper quartile are counted. A benchmark that
measured an epoch against the time of its matrix products (``benchmark.extra_info["gemm floor"]``) prints
that fraction and a profile of where the rest went; one that measured a core's multiply-add peak
(``benchmark.extra_info["peak GFLOP/s"]``) prints it.
"""

from __future__ import annotations

import pytest

from tdlib.data import FashionMNIST, load_fashion_mnist


@pytest.fixture(scope="session")
def data() -> FashionMNIST:
    """Fashion-MNIST, loaded once for every benchmark that trains on it or times on its images."""
    return load_fashion_mnist()


def target_met(info: dict) -> bool:
    """Whether ``info``'s ratio met its ``"target"``: its median, or the figure ``info["judged on"]`` names
    (its upper quartile)."""
    on_quartile = info.get("judged on") == "upper quartile"
    return (info["quartiles"][1] if on_quartile else info["ratio"]) <= info["target"]


def against(info: dict) -> str:
    """``info``'s ratio against its target, if it has one: ", target at most 1.10x: met" on the median, or
    on the figure ``info["judged on"]`` names (its upper quartile)."""
    target = info.get("target")
    if target is None:
        return ""
    verdict = "met" if target_met(info) else "MISSED"
    if info.get("judged on") == "upper quartile":
        return f", upper quartile {info['quartiles'][1]:.3f}x against at most {target:.2f}x: {verdict}"
    return f", target at most {target:.2f}x: {verdict}"


def case(bench) -> str:
    """A benchmark's case, as its parameters name it."""
    return bench.name.split("[")[-1].rstrip("]")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled or not session.benchmarks:
        return
    groups: dict[str, list] = {}
    for bench in session.benchmarks:
        groups.setdefault(bench.group or "", []).append(bench)
    paired = [b for b in session.benchmarks if "paired" in b.extra_info]
    if paired:
        terminalreporter.section("paired ratios (alternating blocks; median of the rounds' ratios, quartiles)")
    for bench in paired:
        info = bench.extra_info["paired"]
        low, high = info["quartiles"]
        rates = info.get("GFLOP/s (dense work, fastest round)")
        rate = f"; {rates['ours']:.0f} and {rates['theirs']:.0f} GFLOP/s of dense work" if rates else ""
        terminalreporter.write_line(
            f"{bench.group}: {case(bench)}: tdlib {info['ours'] * 1e6:.1f} us, "
            f"ONNX Runtime {info['theirs'] * 1e6:.1f} us: {info['ratio']:.3f}x the time "
            f"(quartiles {low:.3f}-{high:.3f}; {info['form']}{rate}){against(info)}")
    judged = [bench for bench in paired if bench.extra_info["paired"].get("judged on") == "upper quartile"]
    if judged:
        missed = [case(bench) for bench in judged if not target_met(bench.extra_info["paired"])]
        terminalreporter.write_line(
            f"{len(judged) - len(missed)} of {len(judged)} no slower than ONNX Runtime on the upper quartile of the "
            f"paired rounds' ratios" + (f"; missed: {', '.join(missed)}" if missed else ""))
    for bench in session.benchmarks:
        if "peak GFLOP/s" in bench.extra_info:
            terminalreporter.write_line(f"{bench.group}: {bench.extra_info['peak GFLOP/s']:.0f} GFLOP/s (multiply-adds "
                                        f"in registers alone, fastest round)")
    for bench in session.benchmarks:
        turns = bench.extra_info.get("round_robin", {})
        if turns:
            terminalreporter.section(f"{bench.group}: in turns (median of the rounds' ratios to the first, quartiles)")
        for name, info in turns.items():
            low, high = info["quartiles"]
            over = f", {info['over the first'] * 1e3:+.0f} ms" if "over the first" in info else ""
            of = f" {info['against']}'s time" if "against" in info else ""
            terminalreporter.write_line(f"{name}: {info['seconds'] * 1e3:.2f} ms, {info['ratio']:.3f}x{of}{over} "
                                        f"(quartiles {low:.3f}-{high:.3f}){against(info)}")
    for bench in session.benchmarks:
        floor = bench.extra_info.get("gemm floor")
        if floor is None:
            continue
        terminalreporter.section(f"{bench.group}: an epoch against its matrix products alone")
        met = "met" if floor["fraction of the limit"] >= floor["target"] else "not met: where the rest goes below"
        terminalreporter.write_line(
            f"epoch {floor['epoch seconds']:.2f} s; its matrix products alone {floor['floor seconds']:.2f} s at "
            f"{floor['GFLOP/s']:.0f} GFLOP/s, this CPU's rate on those shapes: {floor['fraction of the limit']:.2f} "
            f"of the limit (target at least {floor['target']:.2f}: {met})")
        terminalreporter.write_line("60 steps by phase: " + ", ".join(
            f"{name} {share:.0%}" for name, share in floor["phases"].items()))
        terminalreporter.write_line("own time of each operator, 60 steps (torch profiler): " + ", ".join(
            f"{name} {share:.0%}" for name, share in floor["profile"]))
    terminalreporter.section("ratios to baseline (median time, same run)")
    for group, benches in sorted(groups.items()):
        baseline = next((b for b in benches if b.extra_info.get("baseline")), None)
        if baseline is None:
            continue
        base = baseline.stats.median
        for bench in sorted(benches, key=lambda b: b.stats.median):
            ratio = bench.stats.median / base
            flops = bench.extra_info.get("flop_ratio")
            form = bench.extra_info.get("form")
            steady = bench.extra_info.get("steady epochs/min")
            terminalreporter.write_line(
                f"{group}: {bench.name}: {bench.stats.median * 1e3:.3f} ms = {ratio:.3f}x the time of "
                f"{baseline.name} (speed-up {1 / ratio:.2f}x"
                + (f", FLOP ratio {flops:.1f}" if flops else "")
                + (f", {form}" if form else "")
                + (f", steady {steady} epochs/min" if steady else "")
                + ")"
            )
