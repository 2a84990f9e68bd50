"""PNG figures of a run, drawn from the written tables (never from live model state)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from sim.metrics import STAGE_LABELS  # noqa: E402


def _band(levels: pd.DataFrame, column: str) -> pd.DataFrame:
    """Weekly mean across replications per stage, with a 95 % t interval.

    Daily values swing with the weekly calendar; a planner reads weeks.
    """
    weekly = levels.assign(week=levels["day"] // 7).groupby(["replication", "stage", "week"], observed=True)[column].mean()
    weekly = weekly.reset_index().assign(day=lambda d: d["week"] * 7 + 3.5)
    g = weekly.groupby(["stage", "day"], observed=True)[column]
    out = g.agg(["mean", "std", "count"]).reset_index()
    t = stats.t.ppf(0.975, np.maximum(out["count"] - 1, 1))
    half = np.where(out["count"] > 1, t * out["std"] / np.sqrt(out["count"]), np.nan)
    out["lo"] = out["mean"] - half
    out["hi"] = out["mean"] + half
    return out


def _level_figure(levels: pd.DataFrame, column: str, title: str, ylabel: str, path: Path) -> Path:
    band = _band(levels, column)
    stages = list(dict.fromkeys(levels["stage"]))
    fig, axes = plt.subplots(len(stages), 1, figsize=(9, 2.2 * len(stages) + 0.6), sharex=True, squeeze=False)
    for ax, stage in zip(axes[:, 0], stages):
        b = band[band["stage"] == stage]
        ax.plot(b["day"], b["mean"], lw=1.2, label="weekly mean of replications")
        ax.fill_between(b["day"], b["lo"], b["hi"], alpha=0.3, label="95 % CI")
        ax.set_ylabel(ylabel)
        ax.set_title(STAGE_LABELS.get(stage, stage), fontsize=10, loc="left")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("day since start")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def funnel_counts(per_replication: pd.DataFrame, stages: list[str]) -> list[tuple[str, float]]:
    """Mean counts along the pathway, from the per-replication KPI table."""
    m = per_replication.mean(numeric_only=True)
    steps = [("Referrals", m.get("referrals", np.nan))]
    if "intake_assessed" in m:
        steps.append(("Assessed at intake", m["intake_assessed"]))
    steps.append(("Placed in residential, PHP or IOP", m.get("placed_in_treatment", np.nan)))
    steps.append(("Admitted to treatment", m.get("admitted_to_treatment", np.nan)))
    steps.append(("Completed a program", m.get("programs_completed", np.nan)))
    if "aftercare" in stages:
        steps.append(("Entered aftercare", m.get("aftercare_admissions", np.nan)))
    return steps


def funnel_figure(per_replication: pd.DataFrame, stages: list[str], path: Path) -> Path:
    steps = funnel_counts(per_replication, stages)
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(steps) + 1.2))
    labels = [s for s, _ in steps][::-1]
    values = [v for _, v in steps][::-1]
    ax.barh(labels, values, color="#4C72B0")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:,.0f}", va="center", fontsize=9)
    ax.set_xlabel("episodes over the run (mean of replications)")
    ax.set_title("Outcome funnel")
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_figures(levels: pd.DataFrame, per_replication: pd.DataFrame, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stages = list(dict.fromkeys(levels["stage"])) if len(levels) else []
    out = []
    if len(levels):
        out.append(_level_figure(levels, "waitlist_mean", "Waitlist length over time", "waiting", folder / "waitlist.png"))
        out.append(_level_figure(levels, "census_mean", "Census over time", "in care", folder / "census.png"))
    out.append(funnel_figure(per_replication, stages, folder / "funnel.png"))
    return out
