"""The results table: one row per measurement, ours beside the baseline, with the goal and whether it was met."""

from __future__ import annotations

import dataclasses

COLUMNS = ("measurement", "ours", "baseline", "ratio", "goal", "met?")


@dataclasses.dataclass(frozen=True)
class Row:
    """One measurement. `ratio` is ours / baseline; `met` is `None` when the row has no goal (reported only)."""

    measurement: str
    ours: float
    baseline: float
    unit: str
    goal: str
    met: bool | None

    @property
    def ratio(self) -> float | None:
        return self.ours / self.baseline if self.baseline else None

    def cells(self) -> tuple[str, ...]:
        ratio = "-" if self.ratio is None else f"{self.ratio:.3f}"
        met = "n/a" if self.met is None else ("yes" if self.met else "NO")
        return (
            self.measurement,
            f"{_number(self.ours)} {self.unit}".strip(),
            f"{_number(self.baseline)} {self.unit}".strip(),
            ratio,
            self.goal,
            met,
        )


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e12:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.3f}"
    return f"{value:.4g}"


def render(rows: list[Row], header_lines: list[str] = ()) -> str:
    """The rows as an aligned plain-text table, after any header lines (configuration, machine)."""
    cells = [COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(value.ljust(width) for value, width in zip(values, widths)).rstrip()

    out = [*header_lines, line(COLUMNS), "  ".join("-" * width for width in widths)]
    out += [line(row.cells()) for row in rows]
    return "\n".join(out) + "\n"
