"""The proof report: runs the end-to-end benchmark and the long form of the fault suite, and
writes benchmarks/REPORT.md with their figures, the machine and the command lines.

    .venv/bin/python benchmarks/report.py [--quick] [--iterations N]    # or `make report`

`--quick` runs the benchmark's smoke form and 2 fault iterations (a check that the report
works, not figures to quote). The exit status is 1 if the benchmark or the fault suite failed;
the report is written either way and says so.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import benchmark_parser, fmt, progress, versions
from end_to_end import PACKAGES

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUTPUT = HERE / "REPORT.md"


def machine() -> dict[str, Any]:
    """CPU model and count, memory, OS, Python: what the figures depend on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "packages": versions((*PACKAGES, "hypothesis")),
    }


def run(command: list[str], env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """Run from the repository root; exit status, output (stdout and stderr), seconds."""
    began = time.monotonic()
    done = subprocess.run(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return done.returncode, done.stdout, time.monotonic() - began


def shown(command: list[str], env: dict[str, str] | None = None) -> str:
    """A command line as a reader types it from the repository root."""
    relative = [str(Path(p).relative_to(ROOT)) if p.startswith(str(ROOT)) else p for p in command]
    relative[0] = ".venv/bin/python"
    prefix = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    return f"{prefix} {shlex.join(relative)}".strip()


def mib(value: int | None) -> str:
    return fmt(None if value is None else value / 2**20, 0, " MiB")


def benchmark_section(report: dict[str, Any] | None, command: str, code: int, output: str) -> str:
    lines = ["## End-to-end benchmark", "", f"`{command}`", ""]
    if report is None:
        tail = "\n".join(output.strip().splitlines()[-20:])
        return "\n".join([*lines, f"**Failed** (exit {code}), no figures:", "", "```", tail, "```"])
    config = report["config"]
    lines += [
        f"{config['producers']} producer processes (the tracebus SDK, default settings), the "
        "embedded broker (tansu, memory storage), `tracebus stream` and `tracebus sink "
        "langfuse` workers at their default settings (grace 2 s, sink linger 200 ms), the fast "
        "Langfuse stand-in of `sink_throughput.py`. Traces of 5–20 observations. Steady: "
        f"{config['rate']:,.0f} spans/s offered for {config['seconds']:g} s. Burst: "
        f"{config['burst']:,} traces as fast as the producers go. Latency: from a span's end "
        "(SDK clock) to its arrival at the stand-in; it includes the stream's grace period.",
        "",
        "| run | stream × sink workers | spans | offered spans/s | delivered spans/s "
        "| p50 latency | p99 latency | notes |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for row in report["runs"]:
        lines.append(
            f"| {row['mode']} | {row['stream_workers']} × {row['sink_workers']} "
            f"| {fmt(row.get('spans'))} | {fmt(row.get('offered_spans_per_s'))} "
            f"| {fmt(row.get('delivered_spans_per_s'))} "
            f"| {fmt(row.get('latency_p50_ms'), suffix=' ms')} "
            f"| {fmt(row.get('latency_p99_ms'), suffix=' ms')} | {row.get('error', '')} |"
        )
    base = next(
        (
            r.get("delivered_spans_per_s")
            for r in report["runs"]
            if r["mode"] == "burst" and (r["stream_workers"], r["sink_workers"]) == (1, 1)
        ),
        None,
    )
    lines += ["", "Scaling of the burst rate, relative to 1 stream × 1 sink worker:", ""]
    for row in report["runs"]:
        if row["mode"] == "burst" and base and row.get("delivered_spans_per_s"):
            share = row["delivered_spans_per_s"] / base
            lines.append(f"- {row['stream_workers']} × {row['sink_workers']}: {share:.2f}×")
    names = sorted({n for row in report["runs"] for n in row.get("peak_rss_bytes", {})})
    header = [f"{r['mode']} {r['stream_workers']}×{r['sink_workers']}" for r in report["runs"]]
    lines += [
        "",
        "Peak resident memory of every process (VmRSS, sampled every 0.25 s; producers: "
        "their own maximum):",
        "",
        "| process | " + " | ".join(header) + " |",
        "|---|" + "--:|" * len(header),
    ]
    for name in names:
        cells = [mib(r.get("peak_rss_bytes", {}).get(name)) for r in report["runs"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def merged_examples(scenarios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scenarios, the examples of a hypothesis test (lines with `inputs`) added up into one."""
    merged: list[dict[str, Any]] = []
    examples: dict[str, dict[str, Any]] = {}
    for scenario in scenarios:
        if "inputs" not in scenario:
            merged.append(scenario)
            continue
        total = examples.get(scenario["scenario"])
        if total is None:
            total = examples[scenario["scenario"]] = {
                "scenario": scenario["scenario"],
                "examples": 0,
                "seconds": 0.0,
                "inputs": Counter(),
                "dead_letters": Counter(),
            }
            merged.append(total)
        total["examples"] += 1
        total["seconds"] += scenario["seconds"]
        total["inputs"].update(scenario["inputs"])
        total["dead_letters"].update(scenario["dead_letters"])
    return merged


def fault_section(
    lines_path: Path, command: str, code: int, output: str, seconds: float, iterations: int
) -> str:
    scenarios = [json.loads(line) for line in lines_path.read_text().splitlines() if line]
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    verdict = "passed" if code == 0 else f"**FAILED** (exit {code})"
    lines = [
        "## Fault suite (long form)",
        "",
        f"`{command}`",
        "",
        f"{verdict} in {seconds:.0f} s, {iterations} iterations of each fault: `{summary}`. "
        + (
            f"Fault moments and victims drawn with seed {scenarios[0]['seed']} "
            f"(`TRACEBUS_FAULT_SEED={scenarios[0]['seed']}` draws them again)."
            if scenarios
            else ""
        ),
        "",
        "Checked after every scenario, by id at the strict stand-ins: every emitted trace "
        "delivered to Langfuse and LangSmith, each span in one stored row and each run once; "
        "no dead letter but those of bad records, each with its reason; no worker over its "
        "memory bound. *Re-sent spans* are Langfuse spans received again after a SIGKILL or a "
        "cut connection (the worker could not know the first request succeeded; the row is "
        "replaced, not duplicated); *409s* are LangSmith answering that a run was already "
        "received.",
        "",
        "| scenario | s | traces | spans | re-sent spans | 409s | dead letters | "
        "restarts | peak RSS (MiB) |",
        "|---|--:|--:|--:|--:|--:|---|---|---|",
    ]
    for s in merged_examples(scenarios):
        letters = "<br>".join(f"{n} × {reason}" for reason, n in s["dead_letters"].items())
        restarts = ", ".join(f"{k} {v}" for k, v in s.get("restarts", {}).items() if v)
        rss = ", ".join(f"{k} {v}" for k, v in s.get("peak_rss_mib", {}).items())
        if "inputs" in s:
            kinds = ", ".join(f"{n} {kind}" for kind, n in s["inputs"].items())
            lines.append(
                f"| {s['scenario']}, {s['examples']} examples: {kinds} | {s['seconds']:.1f} "
                f"| | | | | {letters or '–'} | | |"
            )
            continue
        label = s["scenario"]
        if cuts := s.get("cut_seconds"):
            label += "; cuts (s): " + "; ".join(
                f"{k} {', '.join(map(str, v))}" for k, v in cuts.items()
            )
        lines.append(
            f"| {label} | {s['seconds']} | {s['traces']:,} | {s['spans']:,} "
            f"| {s['redelivered_spans']:,} | {s['langsmith_conflicts']:,} | {letters or '–'} "
            f"| {restarts or '–'} | {rss} |"
        )
    if code != 0:
        failures = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
        lines += ["", "Failures:", "", "```", *failures[:20], "```"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__ or "")
    parser.add_argument("--quick", action="store_true", help="smoke form of both parts")
    parser.add_argument("--iterations", type=int, default=5, help="of each fault (long form)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    iterations = 2 if args.quick else args.iterations
    started = datetime.now(UTC)
    host = machine()  # before the runs: the load average is the one they started under
    with tempfile.TemporaryDirectory(prefix="tracebus-report-") as directory:
        work = Path(directory)
        bench_json = work / "end_to_end.json"
        bench_command = [sys.executable, str(HERE / "end_to_end.py"), *(["--quick"] * args.quick)]
        progress(f"end-to-end benchmark: {shown(bench_command)}")
        bench_code, bench_output, _ = run([*bench_command, "--json", str(bench_json)])
        bench = json.loads(bench_json.read_text()) if bench_json.exists() else None
        fault_lines = work / "faults.jsonl"
        fault_env = {"TRACEBUS_FAULT_ITERATIONS": str(iterations)}
        fault_command = [
            sys.executable,
            "-m",
            "pytest",
            "tests/faults",
            "-q",
            "-p",
            "no:cacheprovider",
        ]
        progress(f"fault suite: {shown(fault_command, fault_env)}")
        fault_code, fault_output, fault_seconds = run(
            fault_command,
            {**os.environ, **fault_env, "TRACEBUS_FAULT_REPORT": str(fault_lines)},
        )
        fault_lines.touch()
        sections = [
            "# tracebus: proof under load and faults",
            "",
            f"Generated {started:%Y-%m-%d %H:%M} UTC by `make report` "
            f"(`{shown([sys.executable, str(HERE / 'report.py'), *(argv or sys.argv[1:])])}`); "
            "re-run it to reproduce. The machine is shared by every process of the pipeline, "
            "so the figures are those of the whole pipeline on it, not of one worker.",
            "",
            "## Machine",
            "",
            *[f"- {k}: {v}" for k, v in host.items() if k != "packages"],
            "- packages: " + ", ".join(f"{k} {v}" for k, v in host["packages"].items()),
            "",
            benchmark_section(bench, shown(bench_command), bench_code, bench_output),
            "",
            fault_section(
                fault_lines,
                shown(fault_command, fault_env),
                fault_code,
                fault_output,
                fault_seconds,
                iterations,
            ),
            "",
        ]
    args.output.write_text("\n".join(sections))
    print(f"wrote {args.output}")
    return 1 if bench_code or fault_code else 0


if __name__ == "__main__":
    sys.exit(main())
