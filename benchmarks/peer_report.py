"""What benchmarks/peers.py found, as a table, docs/peers.json, docs/peers.png and README's
table: all drawn from one ``Results`` so that the chart and the README never disagree."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FLOOR = "floor"
README_START = "<!-- peers-table:start (benchmarks/peers.py writes this table) -->"
README_END = "<!-- peers-table:end -->"
WORKLOAD_TITLES = {
    "fresh_apply": "fresh apply of 001+003, whole process",
    "noop_process": "no-op start-up, whole process",
    "concurrent_processes": "16 processes at once, fresh database (wall)",
    "noop_in_process": "no-op start-up in process (API)",
}


@dataclass
class Measurement:
    """One tool (or the floor) on one workload: its timings and what went wrong."""

    tool: str
    workload: str
    samples: list[float] = field(default_factory=list)  # seconds
    runs: int = 0
    failures: int = 0  # runs with any process exiting non-zero
    processes_failed: int = 0  # for concurrent_processes: processes exiting non-zero
    problems: list[str] = field(default_factory=list)  # end-state problems, one per run
    checked: int = 0  # runs whose end state was checked
    bad_end_states: int = 0  # checked runs with any problem
    note: str = ""  # the first failure's last line of stderr

    def add(
        self, seconds: float, *, failed: bool = False, note: str = "", processes_failed: int = 0
    ) -> None:
        self.runs += 1
        self.samples.append(seconds)
        self.failures += failed
        self.processes_failed += processes_failed
        if note and not self.note:
            self.note = note

    def check(self, problems: list[str]) -> None:
        self.checked += 1
        self.problems.extend(problems)
        self.bad_end_states += bool(problems)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000 if self.samples else float("nan")


@dataclass
class Results:
    """One run of benchmarks/peers.py."""

    measured_at: str
    machine: str
    server: str
    rounds: int
    concurrency: int
    versions: dict[str, str]
    skipped: dict[str, str]
    measurements: list[Measurement] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Results:
        data: dict[str, Any] = json.loads(path.read_text())
        found = [Measurement(**item) for item in data.pop("measurements")]
        return cls(**data, measurements=found)

    def workloads(self) -> list[str]:
        return list(dict.fromkeys(m.workload for m in self.measurements))

    def of(self, workload: str) -> list[Measurement]:
        return [m for m in self.measurements if m.workload == workload]

    def floor(self, workload: str) -> Measurement | None:
        return next((m for m in self.of(workload) if m.tool == FLOOR), None)


def _ratio(measurement: Measurement, floor: Measurement | None) -> str:
    if measurement.tool == FLOOR or floor is None or not measurement.samples:
        return ""
    return f"{measurement.median_ms / floor.median_ms:.2f}x"


def _range(measurement: Measurement) -> str:
    if not measurement.samples:
        return ""
    low, high = min(measurement.samples) * 1000, max(measurement.samples) * 1000
    return f"{low:.0f}-{high:.0f}"


def _failures(measurement: Measurement, concurrency: int) -> str:
    if measurement.workload == "concurrent_processes" and measurement.tool != FLOOR:
        return f"{measurement.processes_failed} of {measurement.runs * concurrency} processes"
    return f"{measurement.failures} of {measurement.runs} runs"


def _end_state(measurement: Measurement) -> str:
    if measurement.tool == FLOOR or not measurement.checked:
        return ""
    if not measurement.problems:
        return f"ok ({measurement.checked} checked)"
    common = ", ".join(
        f"{problem} ({times})" for problem, times in Counter(measurement.problems).most_common(3)
    )
    return f"{measurement.bad_end_states} of {measurement.checked} wrong: {common}"


def table_rows(results: Results, only: str | None = None) -> list[list[str]]:
    rows = []
    for workload in [only] if only else results.workloads():
        floor = results.floor(workload)
        for measurement in results.of(workload):
            rows.append(
                [
                    measurement.tool,
                    workload,
                    f"{measurement.median_ms:.1f}" if measurement.samples else "",
                    _range(measurement),
                    _ratio(measurement, floor),
                    _failures(measurement, results.concurrency),
                    _end_state(measurement),
                ]
            )
    return rows


HEADER = ["tool", "workload", "median ms", "range ms", "to floor", "failures", "end state"]


def render_table(results: Results, only: str | None = None) -> str:
    """The plain-text table printed as the run goes."""
    rows = [HEADER, *table_rows(results, only)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    notes = [
        f"  {m.tool} {m.workload}: {m.note}"
        for m in results.measurements
        if m.note and (only is None or m.workload == only)
    ]
    return "\n".join(lines + (["first failure of each:", *notes] if notes else []))


def render_markdown(results: Results) -> str:
    rows = [HEADER, ["---"] * len(HEADER), *table_rows(results)]
    versions = ", ".join(f"{name} {version}" for name, version in results.versions.items())
    skipped = "".join(f"; skipped {name}: {why}" for name, why in results.skipped.items())
    return "\n".join(
        ["| " + " | ".join(row) + " |" for row in rows]
        + [
            "",
            f"Measured {results.measured_at} on {results.machine}; {results.server}; "
            f"{results.rounds} rounds ({versions}{skipped}).",
        ]
    )


def update_readme(results: Results, readme: Path) -> None:
    """Replace the table between README's markers; refuse, saying so, without them."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"error: {readme} has no '{README_START}' ... '{README_END}' block")
    head = text[: start + len(README_START)]
    readme.write_text(head + "\n" + render_markdown(results) + "\n" + text[end:])


def render_chart(results: Results, path: Path) -> None:
    """One panel per workload: each tool's median with its range, the floor as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = results.workloads()
    figure, axes = plt.subplots(
        len(workloads), 1, figsize=(9, 2.1 * len(workloads) + 0.8), squeeze=False
    )
    for axis, workload in zip(axes[:, 0], workloads, strict=True):
        floor = results.floor(workload)
        tools = [m for m in results.of(workload) if m.tool != FLOOR and m.samples]
        medians = [m.median_ms for m in tools]
        low = [m.median_ms - min(m.samples) * 1000 for m in tools]
        high = [max(m.samples) * 1000 - m.median_ms for m in tools]
        colours = ["#2b6cb0" if m.tool == "natlangchain-migrate" else "#999999" for m in tools]
        positions = list(range(len(tools)))
        bars = axis.barh(positions, medians, xerr=[low, high], color=colours, capsize=3)
        for bar, measurement in zip(bars, tools, strict=True):
            if measurement.failures or measurement.problems:
                bar.set_hatch("//")
        axis.set_yticks(positions, [m.tool for m in tools])
        axis.invert_yaxis()
        if floor is not None and floor.samples:
            axis.axvline(floor.median_ms, color="#c05621", linestyle="--", linewidth=1)
        for position, measurement in zip(positions, tools, strict=True):
            label = f" {measurement.median_ms:.0f} ms {_ratio(measurement, floor)}"
            failed = measurement.processes_failed or measurement.failures
            if failed or measurement.problems:
                label += f"  FAILED: {_failures(measurement, results.concurrency)}"
                if measurement.problems:
                    count = measurement.bad_end_states
                    label += f", {count} bad end state{'' if count == 1 else 's'}"
            axis.text(
                max(measurement.samples) * 1000,
                position,
                label,
                va="center",
                fontsize=8,
                color="#9b2c2c" if failed or measurement.problems else "black",
            )
        title = WORKLOAD_TITLES.get(workload, workload)
        if floor is not None and floor.samples:
            title += f"; dashed line: floor, {floor.median_ms:.0f} ms"
        axis.set_title(title, fontsize=10, loc="left")
        axis.set_xlabel("ms (bar: median; whisker: min-max)", fontsize=8)
        axis.set_xlim(0, max((max(m.samples) for m in tools), default=0.001) * 1000 * 1.6)
    figure.suptitle(
        f"Migration tools on NatLangChain's 001+003 ({results.server.split(' (')[0]}, "
        f"{results.rounds} rounds)",
        fontsize=11,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")  # failure labels may run past the axes
    plt.close(figure)
