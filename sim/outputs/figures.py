"""PNG figures of a run, drawn from the written tables (never from live model state)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from iopsim.analysis.kpis import STAGE_LABELS  # noqa: E402


def _save(fig, path: Path) -> Path:
    """Save atomically: a figure is either complete or absent."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


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
    return _save(fig, path)


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
    return _save(fig, path)


def group_census_figure(sessions: pd.DataFrame, path: Path) -> Path:
    """Distribution of attendees per held session, by track (all replications pooled)."""
    held = sessions[sessions["status"] == "held"]
    tracks = list(dict.fromkeys(held["track"]))
    fig, ax = plt.subplots(figsize=(8, 4))
    data = [held.loc[held["track"] == t, "attendees"].to_numpy() for t in tracks]
    if data:
        top = max(int(max((d.max() for d in data if d.size), default=0)), 1)
        bins = np.arange(-0.5, top + 1.5, 1.0)
        for t, d in zip(tracks, data):
            ax.hist(d, bins=bins, histtype="step", lw=1.8, density=True, label=f"{t} ({d.size:,} sessions)")
        ax.legend(fontsize=8)
    ax.set_xlabel("clients attending a session (group census)")
    ax.set_ylabel("share of sessions")
    ax.set_title("Group census per session, by track")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _mean_ci_cols(per_replication: pd.DataFrame, cols: list[str]) -> tuple[np.ndarray, np.ndarray]:
    x = per_replication[cols].to_numpy(dtype=float)
    mean = np.nanmean(x, axis=0)
    n = np.sum(np.isfinite(x), axis=0)
    sd = np.nanstd(x, axis=0, ddof=1) if x.shape[0] > 1 else np.zeros(len(cols))
    half = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, half


def utilisation_figure(per_replication: pd.DataFrame, path: Path) -> Path | None:
    roles = [c[len("staff_") : -len("_utilisation")] for c in per_replication.columns
             if c.startswith("staff_") and c.endswith("_utilisation")]
    if not roles:
        return None
    mean, half = _mean_ci_cols(per_replication, [f"staff_{r}_utilisation" for r in roles])
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(roles) + 1.5))
    ax.barh(roles, mean, xerr=half, color="#55A868", capsize=4)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, max(1.05, float(np.nanmax(mean + half)) * 1.05))
    ax.set_xlabel("utilisation: busy hours / paid hours (mean, 95 % CI)")
    ax.set_title("Staff utilisation by role")
    fig.tight_layout()
    return _save(fig, path)


COST_COMPONENTS = ("cost_services", "cost_patient_days", "cost_assessments", "cost_overhead")


def cost_figure(per_replication: pd.DataFrame, path: Path) -> Path:
    labour = [c for c in per_replication.columns if c.startswith("cost_labour_")]
    cols = labour + [c for c in COST_COMPONENTS if c in per_replication.columns]
    labels = [f"labour: {c[len('cost_labour_'):]}" for c in labour] + [
        {"cost_services": "services (drug tests ...)", "cost_patient_days": "patient-day costs",
         "cost_assessments": "intake assessments", "cost_overhead": "fixed overhead"}[c]
        for c in cols[len(labour):]
    ]
    mean, half = _mean_ci_cols(per_replication, cols)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(cols) + 1.6))
    ax.barh(labels[::-1], mean[::-1], xerr=half[::-1], color="#C44E52", capsize=3)
    total = float(np.nansum(mean))
    for i, v in enumerate(mean[::-1]):
        ax.text(v, i, f"  {v:,.0f} ({v / total:.0%})" if total else "", va="center", fontsize=8)
    ax.set_xlabel("cost over the run (mean of replications, 95 % CI)")
    ax.set_title("Cost breakdown")
    ax.margins(x=0.25)
    fig.tight_layout()
    return _save(fig, path)


def calendar_figure(sessions: pd.DataFrame, horizon_days: int, replications: int, path: Path) -> Path:
    """Heatmap: sessions held per week, by weekday and hour of day (all tracks)."""
    held = sessions[sessions["status"] == "held"]
    grid = np.zeros((24, 7))
    for t, h in zip(held["t_start"].to_numpy(dtype=float), held["hours"].to_numpy(dtype=float)):
        day = int(t) % 7
        start = (t % 1.0) * 24.0
        for hour in range(int(start), int(np.ceil(start + h - 1e-9))):
            if hour < 24:
                grid[hour, day] += 1
    weeks = max(horizon_days / 7.0, 1.0) * max(replications, 1)
    grid /= weeks
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(grid, aspect="auto", cmap="Blues", origin="upper")
    ax.set_xticks(range(7), ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
    ax.set_yticks(range(0, 24, 2), [f"{h:02d}:00" for h in range(0, 24, 2)])
    ax.set_title("Group sessions held: average per week, by hour")
    fig.colorbar(im, ax=ax, label="sessions in progress (per week)")
    fig.tight_layout()
    return _save(fig, path)


def run_figures(tables: dict[str, pd.DataFrame], per_replication: pd.DataFrame, folder: Path,
                horizon_days: int, replications: int) -> list[Path]:
    """Every figure of a run folder, from the run's tables."""
    folder.mkdir(parents=True, exist_ok=True)
    levels = tables["levels"]
    stages = list(dict.fromkeys(levels["stage"])) if len(levels) else []
    out = []
    if len(levels):
        out.append(_level_figure(levels, "waitlist_mean", "Waitlist length over time", "waiting", folder / "waitlist.png"))
        out.append(_level_figure(levels, "census_mean", "Census over time", "in care", folder / "census.png"))
    out.append(funnel_figure(per_replication, stages, folder / "funnel.png"))
    sessions = tables.get("sessions")
    if sessions is not None and len(sessions):
        out.append(group_census_figure(sessions, folder / "group_census.png"))
        out.append(calendar_figure(sessions, horizon_days, replications, folder / "session_calendar.png"))
    u = utilisation_figure(per_replication, folder / "staff_utilisation.png")
    if u is not None:
        out.append(u)
    out.append(cost_figure(per_replication, folder / "cost_breakdown.png"))
    return out


#: KPIs shown in a comparison's forest plot (those present), after the chosen KPI.
FOREST_KPIS = (
    "programs_completed",
    "admitted_to_treatment",
    "iop_admitted_wait_mean_days",
    "iop_waitlist_mean",
    "iop_reneged",
    "iop_census_mean",
    "cost_total",
    "cost_per_completed_program",
    "iop_cost_per_client_week",
)


def forest_figure(diffs: pd.DataFrame, kpi: str, path: Path) -> Path:
    """Paired differences from the baseline, relative to the baseline mean, with CIs."""
    from iopsim.analysis.kpis import kpi_label

    names = list(dict.fromkeys(diffs["scenario"]))
    base = names[0]
    kpis = [k for k in dict.fromkeys([kpi, *FOREST_KPIS]) if k in set(diffs["kpi"])]
    rows = []
    for k in kpis:
        d = diffs[diffs["kpi"] == k].set_index("scenario")
        bm = d.loc[base, "mean"]
        for n in names[1:]:
            if not np.isfinite(bm) or bm == 0:
                continue
            r = d.loc[n]
            rows.append((f"{kpi_label(k)[0]}  [{n}]", 100 * r["diff"] / abs(bm), 100 * r["diff_ci_low"] / abs(bm),
                         100 * r["diff_ci_high"] / abs(bm), bool(r["significant"])))
    fig, ax = plt.subplots(figsize=(9, 0.42 * max(len(rows), 1) + 1.6))
    for i, (label, m, lo, hi, sig) in enumerate(rows[::-1]):
        color = "#C44E52" if sig else "#4C72B0"
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [i, i], color=color, lw=2)
        ax.plot([m], [i], "o", color=color)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows[::-1]], fontsize=8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel(f"difference from {base}, % of {base}'s mean (95 % CI; red = significant)")
    ax.set_title("Paired differences with common random numbers")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _save(fig, path)


def overlay_figure(levels_by_scenario: dict[str, pd.DataFrame], column: str, title: str, ylabel: str, path: Path) -> Path:
    """One panel per stage, one line (weekly mean, 95 % CI band) per scenario."""
    stages = list(dict.fromkeys(s for lv in levels_by_scenario.values() for s in lv["stage"]))
    fig, axes = plt.subplots(len(stages), 1, figsize=(9, 2.2 * len(stages) + 0.6), sharex=True, squeeze=False)
    for name, levels in levels_by_scenario.items():
        band = _band(levels, column)
        for ax, stage in zip(axes[:, 0], stages):
            b = band[band["stage"] == stage]
            line, = ax.plot(b["day"], b["mean"], lw=1.2, label=name)
            ax.fill_between(b["day"], b["lo"], b["hi"], alpha=0.2, color=line.get_color())
    for ax, stage in zip(axes[:, 0], stages):
        ax.set_title(STAGE_LABELS.get(stage, stage), fontsize=10, loc="left")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("day since start")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def comparison_figures(folder, names: list[str], diffs: pd.DataFrame, kpi: str) -> list[Path]:
    """Figures of a comparison, read back from the scenario folders already written."""
    fig_dir = folder.file("figures/.keep").parent
    levels = {n: pd.read_parquet(folder.path / "scenarios" / n / "levels.parquet") for n in names}
    return [
        forest_figure(diffs, kpi, fig_dir / "forest.png"),
        overlay_figure(levels, "waitlist_mean", "Waitlist length over time, by scenario", "waiting", fig_dir / "waitlist_overlay.png"),
        overlay_figure(levels, "census_mean", "Census over time, by scenario", "in care", fig_dir / "census_overlay.png"),
    ]


def sweep_lines(summary: pd.DataFrame, factor: str, kpi: str, ylabel: str, path: Path) -> Path:
    s = summary.sort_values(f"factor:{factor}")
    x = s[f"factor:{factor}"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, s[kpi], "o-", lw=1.4, label="mean of replications")
    ax.fill_between(x, s[f"{kpi}:ci_low"], s[f"{kpi}:ci_high"], alpha=0.3, label="95 % CI")
    ax.set_xlabel(factor)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{ylabel} as {factor} varies", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def sweep_heatmap(summary: pd.DataFrame, fx: str, fy: str, kpi: str, label: str, path: Path) -> Path:
    grid = summary.pivot_table(index=f"factor:{fy}", columns=f"factor:{fx}", values=kpi, aggfunc="mean")
    fig, ax = plt.subplots(figsize=(7, 5))
    im = ax.imshow(grid.to_numpy(dtype=float), origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(grid.shape[1]), [f"{v:g}" if isinstance(v, float) else str(v) for v in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{v:g}" if isinstance(v, float) else str(v) for v in grid.index])
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid.iloc[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xlabel(fx)
    ax.set_ylabel(fy)
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(label, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def sensitivity_figure(df: pd.DataFrame, method: str, kpi: str, path: Path) -> Path:
    """Tornado-style bars: Sobol' S1 and ST, or Morris mu*, with confidence half-widths."""
    from iopsim.analysis.kpis import kpi_label

    if method == "sobol":
        d = df.sort_values("ST")
        y = np.arange(len(d))
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(d) + 1.8))
        ax.barh(y + 0.2, d["ST"], 0.4, xerr=d["ST_conf"], label="total (ST)", color="#C44E52", capsize=3)
        ax.barh(y - 0.2, d["S1"], 0.4, xerr=d["S1_conf"], label="first order (S1)", color="#4C72B0", capsize=3)
        ax.set_xlabel("Sobol' index (95 % CI)")
    else:
        d = df.sort_values("mu_star")
        y = np.arange(len(d))
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(d) + 1.8))
        ax.barh(y, d["mu_star"], xerr=d["mu_star_conf"], color="#4C72B0", capsize=3, label="mu* (95 % CI)")
        ax.set_xlabel("Morris mu*: mean absolute elementary effect")
    ax.set_yticks(y, d["factor"], fontsize=8)
    ax.legend(fontsize=8)
    ax.set_title(f"What drives {kpi_label(kpi)[0]}", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _save(fig, path)


def sweep_figures(folder: Path, sweep, summary: pd.DataFrame) -> list[Path]:
    """One figure per KPI of a sweep: a line over one factor, or a heatmap over a two-factor grid."""
    from iopsim.analysis.kpis import kpi_label

    fig_dir = Path(folder) / "figures"
    fig_dir.mkdir(exist_ok=True)
    names = list(sweep.factors)
    written = []
    if not len(summary):
        return written
    for kpi in sweep.kpis:
        label, unit = kpi_label(kpi)
        if len(names) == 1:
            written.append(sweep_lines(summary, names[0], kpi, f"{label} ({unit})", fig_dir / f"{kpi}.png"))
        elif len(names) == 2 and sweep.design.kind == "grid":
            written.append(sweep_heatmap(summary, names[0], names[1], kpi, f"{label} ({unit})", fig_dir / f"{kpi}.png"))
    return written


def sensitivity_figures(folder: Path, method: str, indices: pd.DataFrame) -> list[Path]:
    """One tornado-style figure per KPI of a sensitivity table (from :func:`analyse_sweep`)."""
    fig_dir = Path(folder) / "figures"
    fig_dir.mkdir(exist_ok=True)
    return [sensitivity_figure(indices[indices["kpi"] == kpi], method, kpi, fig_dir / f"sensitivity_{kpi}.png")
            for kpi in dict.fromkeys(indices["kpi"])]
