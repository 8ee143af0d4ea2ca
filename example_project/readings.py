"""Made-up but plausible wind-turbine readings, and the cleaning and summary steps the example pipeline applies.

Nothing here knows about Dagster or GCS: these are plain functions over rows, so the pipeline's assets stay short
and the numbers can be checked on their own. Readings are 10-minute SCADA-style records for a small wind farm,
generated with numpy's seeded RNG so that a day's file is the same on every run (same content, same crc32c).
"""

from __future__ import annotations

import csv
import datetime
import math
from collections.abc import Iterable, Sequence
from typing import IO

import numpy as np

TURBINES = ("wt-01", "wt-02", "wt-03", "wt-04")
RATED_POWER_KW = 2000.0
CUT_IN_M_S, RATED_M_S, CUT_OUT_M_S = 3.0, 12.0, 25.0
INTERVAL_MINUTES = 10
COLUMNS = ("timestamp", "turbine_id", "wind_speed_m_s", "power_kw", "rotor_rpm", "nacelle_temp_c", "status")
#: Share of readings that are deliberately corrupted (sensor dropouts, impossible values, fault codes).
BAD_FRACTION = 0.06


def _power_curve(wind_speed: np.ndarray) -> np.ndarray:
    """A generic 2 MW power curve: cubic between cut-in and rated speed, flat to cut-out, zero outside."""
    fraction = np.clip((wind_speed**3 - CUT_IN_M_S**3) / (RATED_M_S**3 - CUT_IN_M_S**3), 0.0, 1.0)
    fraction[(wind_speed < CUT_IN_M_S) | (wind_speed > CUT_OUT_M_S)] = 0.0
    return RATED_POWER_KW * fraction


def generate_readings(day: datetime.date, turbines: Sequence[str] = TURBINES) -> list[dict[str, str]]:
    """A day of 10-minute readings for each turbine, a few of them bad, as CSV-ready rows of strings.

    The RNG is seeded from the date, so the same day always gives the same rows.
    """
    rng = np.random.default_rng(int(day.strftime("%Y%m%d")))
    steps = 24 * 60 // INTERVAL_MINUTES
    start = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc)
    # One site-wide wind regime (a slow daily swing plus a random walk) that every turbine sees with its own gusts.
    hours = np.arange(steps) * INTERVAL_MINUTES / 60
    site_wind = 8.0 + 3.0 * np.sin((hours - 6) / 24 * 2 * math.pi) + np.cumsum(rng.normal(0, 0.25, steps))
    rows: list[dict[str, str]] = []
    for turbine in turbines:
        wind = np.clip(site_wind + rng.normal(0, 0.8, steps), 0.0, None)
        power = np.clip(_power_curve(wind) * rng.normal(0.97, 0.02, steps), 0.0, RATED_POWER_KW)
        rpm = np.where(power > 0, 9.0 + 7.0 * power / RATED_POWER_KW, 0.0)
        temperature = 35.0 + 15.0 * power / RATED_POWER_KW + rng.normal(0, 1.0, steps)
        bad = rng.random(steps) < BAD_FRACTION
        kinds = rng.integers(0, 3, steps)
        for step in range(steps):
            row = {
                "timestamp": (start + datetime.timedelta(minutes=INTERVAL_MINUTES * step)).isoformat(),
                "turbine_id": turbine,
                "wind_speed_m_s": f"{wind[step]:.2f}",
                "power_kw": f"{power[step]:.1f}",
                "rotor_rpm": f"{rpm[step]:.2f}",
                "nacelle_temp_c": f"{temperature[step]:.1f}",
                "status": "ok",
            }
            if bad[step]:
                if kinds[step] == 0:
                    row["power_kw"] = ""  # a sensor dropout
                elif kinds[step] == 1:
                    row["wind_speed_m_s"] = f"{-abs(wind[step]) - 1:.2f}"  # an impossible value
                else:
                    row["status"] = "fault"
            rows.append(row)
    return rows


def is_good(row: dict[str, str]) -> bool:
    """Whether a reading is usable: status ok, every number present, wind speed >= 0, power within 0..rated."""
    if row.get("status") != "ok":
        return False
    try:
        wind, power = float(row["wind_speed_m_s"]), float(row["power_kw"])
        float(row["rotor_rpm"]), float(row["nacelle_temp_c"])
    except (KeyError, ValueError):
        return False
    return wind >= 0 and 0 <= power <= RATED_POWER_KW * 1.05


def clean(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The usable readings, in their original order."""
    return [row for row in rows if is_good(row)]


def write_csv(rows: Iterable[dict[str, str]], file: IO[str]) -> None:
    """Write readings as CSV with a header row."""
    writer = csv.DictWriter(file, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)


def read_csv(file: IO[str]) -> list[dict[str, str]]:
    """Read readings written by `write_csv`."""
    return list(csv.DictReader(file))


def summarise(rows: Iterable[dict[str, str]]) -> dict[str, dict[str, np.ndarray | float | int]]:
    """Per-turbine statistics of cleaned readings: counts, means, maxima, energy and capacity factor, plus the
    wind-speed and power series themselves (for plotting a power curve)."""
    by_turbine: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        by_turbine.setdefault(row["turbine_id"], []).append((float(row["wind_speed_m_s"]), float(row["power_kw"])))
    summary: dict[str, dict[str, np.ndarray | float | int]] = {}
    for turbine, pairs in sorted(by_turbine.items()):
        wind = np.array([pair[0] for pair in pairs])
        power = np.array([pair[1] for pair in pairs])
        hours = INTERVAL_MINUTES / 60
        summary[turbine] = {
            "readings": len(pairs),
            "mean_wind_speed_m_s": float(wind.mean()),
            "mean_power_kw": float(power.mean()),
            "max_power_kw": float(power.max()),
            "energy_mwh": float(power.sum() * hours / 1000),
            "capacity_factor": float(power.mean() / RATED_POWER_KW),
            "wind_speed_m_s": wind,
            "power_kw": power,
        }
    return summary
