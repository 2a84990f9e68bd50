"""PNG figures of runs, comparisons and sweeps, drawn from the written files (never from live model state).

Every figure of a run folder is drawn by name from the folder alone
(:func:`draw_run_figure`; :data:`RUN_FIGURES` lists them), and so is every
figure of a comparison folder (:func:`draw_comparison_figure`), which is what
lets :mod:`iopsim.outputs.drawing` draw them in worker processes and
``iopsim report`` draw the ones a ``--no-report`` run skipped.

Conventions: money axes carry the scenario's currency symbol and thousands
separators; shares are in percent; people and places are named in words
(``intake clinician``, ``IOP evening track: groups``), never by identifier; a
stage where nothing happened says so in a line instead of drawing an empty axis.
"""

from __future__ import annotations

import functools

import json
import logging
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from iopsim.lazy import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter  # noqa: E402

from iopsim.analysis.kpis import STAGE_LABELS, kpi_label  # noqa: E402
from iopsim.analysis.stats import t_quantile  # noqa: E402
from iopsim.analysis.verdict import BETTER, DECISION_KPIS, NOT_COMPARABLE, SAME, WORSE, judge  # noqa: E402
from iopsim.outputs.answer import capital, clip_ci, decap, factor_label, human, people_label, signed, sweep_currency, symbol  # noqa: E402,F401

log = logging.getLogger(__name__)

GOOD, BAD, GREY, BLUE = "#2E7D32", "#C62828", "#757575", "#4C72B0"


def _save(fig, path: Path) -> Path:
    """Save atomically: a figure is either complete or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- axes for people


def _tick(v: float, sign: bool = False) -> str:
    a = abs(v)
    if a < 1e-12:
        return "0"
    text = f"{a:,.0f}" if a >= 1000 or a == round(a) else f"{a:.3g}"
    return ("−" if v < 0 else "+" if sign else "") + text


def money_axis(ax, currency: str, axis: str = "x") -> None:
    """Currency symbol and thousands separators on an axis ('$120,000')."""
    sym = symbol(currency)
    formatter = FuncFormatter(lambda v, _pos: f"{'−' if v < -1e-9 else ''}{sym}{abs(v):,.0f}")
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_formatter(formatter)


def count_axis(ax, axis: str = "x") -> None:
    """Plain numbers with thousands separators: no offset, no scientific notation."""
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_formatter(FuncFormatter(lambda v, _pos: _tick(v)))


def unit_axis(ax, unit: str, currency: str, axis: str = "x", points: bool = False) -> None:
    """Format an axis for a KPI's unit; ``points`` writes shares as percentage points (for differences)."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    if unit == "currency":
        money_axis(ax, currency, axis)
    elif unit == "fraction":
        if points:
            target.set_major_formatter(FuncFormatter(lambda v, _pos: _tick(round(100 * v, 6), sign=True)))
        else:
            target.set_major_formatter(PercentFormatter(1.0))
    elif points:
        target.set_major_formatter(FuncFormatter(lambda v, _pos: _tick(v, sign=True)))
    else:
        count_axis(ax, axis)


def unit_words(unit: str) -> str:
    return {"fraction": "percentage points", "currency": "money", "": "value"}.get(unit or "", unit)


# --------------------------------------------------------------------------- what the figures read


#: yaml.safe_load's loader with libyaml's parser when PyYAML has it: the same data, parsed
#: about twenty times faster (each figure reads the scenario file).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _scenario(folder: Path) -> dict:
    """The folder's resolved scenario as a mapping (read-only: it is shared by the figures of a folder)."""
    p = Path(folder) / "scenario.yaml"
    try:
        st = p.stat()
    except OSError:
        return {}
    return _parsed(str(p.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _parsed(path: str, _mtime_ns: int, _size: int) -> dict:
    """A scenario file parsed once per process and version of the file (a run's figures read it up to 8 times)."""
    return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=SAFE_LOADER) or {}


def currency_of(folder: Path) -> str:
    return str((_scenario(folder).get("costs") or {}).get("currency") or "USD")


def _parquet(folder: Path, name: str) -> pd.DataFrame:
    p = Path(folder) / name
    return pd.read_parquet(p) if p.exists() else pd.DataFrame()


def _per_rep(folder: Path) -> pd.DataFrame:
    p = Path(folder) / "replications.csv"
    return pd.read_csv(p) if p.exists() else pd.DataFrame()


# --------------------------------------------------------------------------- levels over time


def _band(levels: pd.DataFrame, column: str) -> pd.DataFrame:
    """Weekly mean across replications per stage, with a 95 % t interval.

    Daily values swing with the weekly calendar; a planner reads weeks.
    """
    weekly = levels.assign(week=levels["day"] // 7).groupby(["replication", "stage", "week"], observed=True)[column].mean()
    weekly = weekly.reset_index().assign(day=lambda d: d["week"] * 7 + 3.5)
    g = weekly.groupby(["stage", "day"], observed=True)[column]
    out = g.agg(["mean", "std", "count"]).reset_index()
    n = out["count"].to_numpy()
    t = np.array([t_quantile(0.975, int(max(k - 1, 1))) for k in n]) if len(n) else np.array([])
    half = np.where(n > 1, t * out["std"].to_numpy() / np.sqrt(np.maximum(n, 1)), np.nan)
    out["lo"] = out["mean"] - half
    out["hi"] = out["mean"] + half
    return out


def _active(levels: pd.DataFrame, column: str) -> tuple[list[str], list[str]]:
    """Stages in order, split into those where something happened and those where nothing did."""
    stages = list(dict.fromkeys(levels["stage"].unique()))  # in order of appearance; unique() first: a string
    # column iterated in Python costs a tenth of a second per 100 000 rows
    peak_col = column.replace("_mean", "_max") if column.replace("_mean", "_max") in levels.columns else column
    peak = levels.groupby("stage", observed=True)[peak_col].max()
    active = [s for s in stages if float(peak.get(s, 0.0)) > 0]
    return active, [s for s in stages if s not in active]


def _stage_name(stage: str) -> str:
    return STAGE_LABELS.get(stage, human(stage))


def _empty_note(ax, text: str) -> None:
    ax.axis("off")
    ax.text(0.0, 0.5, text, transform=ax.transAxes, va="center", ha="left", fontsize=10, color="#444444")


def _levels_layout(n_active: int, has_empty: bool):
    rows = max(n_active, 0) + (1 if has_empty or n_active == 0 else 0)
    ratios = [1.0] * n_active + ([0.22 if n_active else 1.0] if rows > n_active else [])
    height = 2.1 * n_active + (0.55 if rows > n_active else 0) + 0.9
    fig, axes = plt.subplots(rows, 1, figsize=(9, height), squeeze=False, gridspec_kw={"height_ratios": ratios})
    return fig, axes[:, 0]


def _nothing(empty: list[str], what: str) -> str:
    names = [_stage_name(s) for s in empty]
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{capital(what)} at {joined} during the run." if names else ""


def _finish_level_axes(axes, active: list[str], empty: list[str], ylabel: str, nothing: str) -> None:
    """Titles, limits, count ticks and grid of each stage panel; the idle stages in one line of text."""
    for ax, stage in zip(axes, active):
        ax.set_title(_stage_name(stage), fontsize=10, loc="left")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
        count_axis(ax, "y")
        count_axis(ax, "x")
        ax.grid(alpha=0.3)
    if active:
        axes[0].legend(fontsize=8, loc="upper right")
        axes[len(active) - 1].set_xlabel("day of the run")
    if len(axes) > len(active):
        _empty_note(axes[-1], _nothing(empty, nothing) if active else f"{capital(nothing)} at any stage during the run.")


def _level_figure(levels: pd.DataFrame, column: str, title: str, ylabel: str, path: Path,
                  nothing: str = "no one waited") -> Path:
    active, empty = _active(levels, column)
    band = _band(levels[levels["stage"].isin(active)], column) if active else pd.DataFrame()
    fig, axes = _levels_layout(len(active), bool(empty))
    for ax, stage in zip(axes, active):
        b = band[band["stage"] == stage]
        ax.plot(b["day"], b["mean"], lw=1.2, color=BLUE, label="weekly mean of replications")
        ax.fill_between(b["day"], b["lo"], b["hi"], alpha=0.3, color=BLUE, lw=0, label="95 % CI")
    _finish_level_axes(axes, active, empty, ylabel, nothing)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def overlay_figure(levels_by_scenario: dict[str, pd.DataFrame], column: str, title: str, ylabel: str, path: Path,
                   nothing: str = "no one waited") -> Path:
    """One panel per stage, one line (weekly mean, 95 % CI band) per scenario; idle stages in one line of text."""
    stages = list(dict.fromkeys(s for lv in levels_by_scenario.values() for s in lv["stage"].unique()))
    act = set()
    for lv in levels_by_scenario.values():
        act |= set(_active(lv, column)[0])
    active = [s for s in stages if s in act]
    empty = [s for s in stages if s not in act]
    fig, axes = _levels_layout(len(active), bool(empty))
    for i, (name, levels) in enumerate(levels_by_scenario.items()):
        band = _band(levels[levels["stage"].isin(active)], column) if active else pd.DataFrame()
        for ax, stage in zip(axes, active):
            b = band[band["stage"] == stage]
            line, = ax.plot(b["day"], b["mean"], lw=1.2, label=name, color=f"C{i}")
            ax.fill_between(b["day"], b["lo"], b["hi"], alpha=0.2, color=line.get_color(), lw=0)
    _finish_level_axes(axes, active, empty, ylabel, nothing)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- the pathway, groups, staff, costs


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


def funnel_figure(per_replication: pd.DataFrame, stages: list[str], path: Path, days: float | None = None) -> Path:
    steps = funnel_counts(per_replication, stages)
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(steps) + 1.3))
    labels = [s for s, _ in steps][::-1]
    values = [v for _, v in steps][::-1]
    ax.barh(labels, values, color=BLUE)
    first = values[-1] if values and values[-1] == values[-1] and values[-1] > 0 else None
    for i, v in enumerate(values):
        share = f" ({v / first:.0%})" if first and i < len(values) - 1 else ""
        ax.text(v, i, f" {v:,.0f}{share}", va="center", fontsize=9)
    window = f" in {days:,.0f} days" if days else " over the run"
    ax.set_xlabel(f"patients{window} (mean of replications)")
    ax.set_title("From referral to a completed program")
    count_axis(ax, "x")
    ax.margins(x=0.2)
    fig.tight_layout()
    return _save(fig, path)


def group_census_figure(sessions: pd.DataFrame, path: Path, sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    """Share of held sessions by the number attending, per track, with each track's minimum and maximum group size."""
    held = sessions[sessions["status"] == "held"]
    sizes = sizes or {}
    tracks = list(dict.fromkeys([*sizes, *held["track"].unique()]))  # the scenario's tracks, held or not
    fig, ax = plt.subplots(figsize=(8.5, 4.4))
    data = [held.loc[held["track"] == t, "attendees"].to_numpy() for t in tracks]
    top = max([int(d.max()) for d in data if d.size] + [hi for _lo, hi in sizes.values()] + [1])
    bins = np.arange(-0.5, top + 1.5, 1.0)
    mins = {sizes[t][0] for t in tracks if t in sizes}
    maxs = {sizes[t][1] for t in tracks if t in sizes}
    one_rule = len(mins) <= 1 and len(maxs) <= 1
    for i, (t, d) in enumerate(zip(tracks, data)):
        if not d.size:  # said in the legend: a track missing from the figure would read as an oversight
            ax.plot([], [], color=f"C{i}", lw=1.8, label=f"{capital(human(t))} track: no session held")
            continue
        color = f"C{i}"
        lo = sizes.get(t, (None, None))[0]
        below = f", {np.mean(d < lo):.0%} below minimum" if lo else ""
        ax.hist(d, bins=bins, histtype="step", lw=1.8, color=color, weights=np.full(d.size, 1.0 / d.size),
                label=f"{capital(human(t))} track: mean {d.mean():.1f} attending{below}")
        if not one_rule and t in sizes:
            ax.axvline(sizes[t][0] - 0.5, color=color, ls="--", lw=1)
            ax.axvline(sizes[t][1] + 0.5, color=color, ls=":", lw=1)
    if one_rule and mins:
        lo, hi = next(iter(mins)), next(iter(maxs))
        ax.axvspan(-0.5, lo - 0.5, color=BAD, alpha=0.06, lw=0)
        ax.axvline(lo - 0.5, color=BAD, ls="--", lw=1.2)
        ax.axvline(hi + 0.5, color=GREY, ls=":", lw=1.2)
        ax.text(lo - 0.45, 0.98, f"minimum group size {lo}", transform=ax.get_xaxis_transform(), va="top",
                fontsize=8, color=BAD)
        ax.text(hi + 0.45, 0.98, f"maximum {hi}", transform=ax.get_xaxis_transform(), va="top", ha="right",
                fontsize=8, color=GREY)
    elif mins:
        ax.plot([], [], color="black", ls="--", lw=1, label="minimum group size (per track colour)")
        ax.plot([], [], color="black", ls=":", lw=1, label="maximum group size")
    if any(d.size for d in data):
        ax.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1.0, 0.9), framealpha=0.9)
    else:
        ax.text(0.5, 0.5, "No group session was held", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlim(-0.5, top + 1.5)  # room to the right of the maximum's line, so it is not hidden by the frame
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("clients attending a session (group census)")
    ax.set_ylabel("share of held sessions")
    ax.set_title("How many clients attend a group session, by track")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _mean_ci_cols(per_replication: pd.DataFrame, cols: list[str]) -> tuple[np.ndarray, np.ndarray]:
    x = per_replication[cols].to_numpy(dtype=float)
    mean = np.nanmean(x, axis=0)
    n = np.sum(np.isfinite(x), axis=0)
    sd = np.nanstd(x, axis=0, ddof=1) if x.shape[0] > 1 else np.zeros(len(cols))
    t = np.array([t_quantile(0.975, int(max(k - 1, 1))) for k in n])
    half = np.where(n > 1, t * sd / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, np.nan_to_num(half)


def utilisation_figure(per_replication: pd.DataFrame, path: Path) -> Path | None:
    roles = [c[len("staff_"): -len("_utilisation")] for c in per_replication.columns
             if c.startswith("staff_") and c.endswith("_utilisation")]
    if not roles:
        return None
    mean, half = _mean_ci_cols(per_replication, [f"staff_{r}_utilisation" for r in roles])
    labels = [capital(human(r)) for r in roles]
    fig, ax = plt.subplots(figsize=(7.5, 0.6 * len(roles) + 1.5))
    ax.barh(labels[::-1], mean[::-1], xerr=half[::-1], color="#55A868", capsize=4)
    for i, (m, h) in enumerate(zip(mean[::-1], half[::-1])):
        ax.text(m + h, i, f"  {m:.0%}", va="center", fontsize=9)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.text(1.0, 1.01, "fully booked", transform=ax.get_xaxis_transform(), ha="center", fontsize=8, color="grey")
    ax.set_xlim(0, max(1.1, float(np.nanmax(mean + half)) * 1.1))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("busy hours as a share of paid hours (mean, 95 % CI)")
    ax.set_title("How busy each staff role is", pad=14)
    fig.tight_layout()
    return _save(fig, path)


COST_COMPONENTS = ("cost_services", "cost_patient_days", "cost_assessments", "cost_overhead")
COST_LABELS = {"cost_services": "Services (drug tests ...)", "cost_patient_days": "Patient-day costs",
               "cost_assessments": "Intake assessments", "cost_overhead": "Fixed overhead"}


def _cost_columns(per_replication: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The cost components of a run (labour role by role, then the rest) and their labels."""
    labour = [c for c in per_replication.columns if c.startswith("cost_labour_")]
    cols = labour + [c for c in COST_COMPONENTS if c in per_replication.columns]
    return cols, [f"Labour: {human(c[len('cost_labour_'):])}" for c in labour] + [COST_LABELS[c] for c in cols[len(labour):]]


def cost_figure(per_replication: pd.DataFrame, path: Path, currency: str = "USD", days: float | None = None) -> Path:
    cols, labels = _cost_columns(per_replication)
    mean, half = _mean_ci_cols(per_replication, cols)
    keep = [i for i, m in enumerate(mean) if np.isfinite(m) and m != 0]
    none = [labels[i] for i in range(len(cols)) if i not in keep]
    cols, labels, mean, half = [cols[i] for i in keep], [labels[i] for i in keep], mean[keep], half[keep]
    fig, ax = plt.subplots(figsize=(8.5, 0.5 * max(len(cols), 1) + 1.8))
    ax.barh(labels[::-1], mean[::-1], xerr=half[::-1], color="#C44E52", capsize=3)
    total = float(np.nansum(mean))
    sym = symbol(currency)
    for i, (v, h) in enumerate(zip(mean[::-1], half[::-1])):
        ax.text(v + h, i, f"  {sym}{v:,.0f} ({v / total:.0%})" if total else "", va="center", fontsize=8)
    window = f"over {days:,.0f} days" if days else "over the run"
    note = f"; no cost: {', '.join(n.lower() for n in none)}" if none else ""
    ax.set_xlabel(f"cost {window} (mean of replications, 95 % CI){note}", fontsize=9)
    ax.set_title(f"Where the money goes: {sym}{total:,.0f} in all")
    money_axis(ax, currency, "x")
    ax.margins(x=0.3)
    ax.set_xlim(left=0)
    fig.tight_layout()
    return _save(fig, path)


def money_figure(per_replication: pd.DataFrame, path: Path, currency: str = "USD", days: float | None = None) -> Path | None:
    """Cost against revenue a year: what the site costs by component, what it collects by payer, the margin."""
    if "revenue_total" not in per_replication.columns:
        return None
    years = (days or 365.0) / 365.0
    costs, cost_labels = _cost_columns(per_replication)
    payers = [c for c in per_replication.columns if c.startswith("revenue_payer_")]
    cost_mean = np.nan_to_num(_mean_ci_cols(per_replication, costs)[0]) / years
    pay_mean = np.nan_to_num(_mean_ci_cols(per_replication, payers)[0]) / years
    (tot_cost, tot_rev, margin), (h_cost, h_rev, h_margin) = (
        x / years for x in _mean_ci_cols(per_replication, ["cost_total", "revenue_total", "margin_total"]))
    sym = symbol(currency).replace("$", r"\$")  # a bare "$" pair would be read as mathematics
    fig, ax = plt.subplots(figsize=(8.5, 3.4))
    palette = plt.get_cmap("tab20").colors
    rows = ((pay_mean, [capital(human(c[len("revenue_payer_"):])) for c in payers], palette[0::2]),
            (cost_mean, [decap(label) for label in cost_labels], palette[1::2]))
    for row, (values, names, colours) in enumerate(rows):
        left = 0.0
        for i, (v, name) in enumerate(zip(values, names)):
            if v > 0:
                ax.barh(row, v, left=left, color=colours[(i + 3 * row) % len(colours)], edgecolor="white",
                        label=f"{'revenue' if row == 0 else 'cost'}: {name}")
                left += v
    ax.errorbar([tot_rev, tot_cost], [0, 1], xerr=[h_rev, h_cost], fmt="none", ecolor="black", capsize=3)
    for row, (v, h) in enumerate(((tot_rev, h_rev), (tot_cost, h_cost))):
        ax.text(v + h, row, f"  {sym}{v:,.0f}", va="center", fontsize=8)
    ax.set_yticks([0, 1], ["Revenue collected", "Cost"])
    ax.invert_yaxis()
    word = "margin" if margin >= 0 else "loss"
    cover = f"; revenue covers {tot_rev / tot_cost:.0%} of the cost" if tot_cost else ""
    ax.set_title(f"A year: a {word} of {sym}{abs(margin):,.0f} (± {sym}{h_margin:,.0f}){cover}", fontsize=10)
    ax.set_xlabel("a year, mean of replications (95 % CI of each total)", fontsize=9)
    fig.legend(loc="lower center", ncol=3, fontsize=7, frameon=False)
    money_axis(ax, currency, "x")
    ax.margins(x=0.15)
    ax.set_xlim(left=0)
    fig.subplots_adjust(left=0.17, right=0.97, top=0.9, bottom=0.4)  # the legend sits below the axes
    return _save(fig, path)


def calendar_figure(sessions: pd.DataFrame, horizon_days: int, replications: int, path: Path) -> Path:
    """Heat map: group sessions in progress per week, by weekday and hour of day (all tracks)."""
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
    used = np.nonzero(grid.sum(axis=1) > 0)[0]
    first, last = (max(int(used.min()) - 1, 0), min(int(used.max()) + 2, 24)) if used.size else (8, 20)
    if last - first < 8:
        last = min(first + 8, 24)
    grid = grid[first:last]
    fig, ax = plt.subplots(figsize=(7, 0.3 * (last - first) + 1.8))
    im = ax.imshow(grid, aspect="auto", cmap="Blues", origin="upper", vmin=0)
    ax.set_xticks(range(7), ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
    ax.set_yticks(range(last - first), [f"{h:02d}:00" for h in range(first, last)], fontsize=8)
    ax.set_title("When group sessions are held: groups in session, average per week")
    fig.colorbar(im, ax=ax, label="groups in session")
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- a run folder, figure by figure


def _levels_png(folder: Path, column: str, title: str, ylabel: str, nothing: str, name: str) -> Path | None:
    levels = _parquet(folder, "levels.parquet")
    if not len(levels):
        return None
    return _level_figure(levels, column, title, ylabel, Path(folder) / "figures" / name, nothing)


def _window(folder: Path) -> float | None:
    sc = _scenario(folder)
    if "horizon_days" not in sc:
        return None
    return float(sc["horizon_days"]) - float(sc.get("warmup_days") or 0)


def _funnel_png(folder: Path) -> Path:
    per_rep = _per_rep(folder)
    stages = list((_scenario(folder).get("stages") or {}).keys())
    return funnel_figure(per_rep, stages, Path(folder) / "figures" / "funnel.png", _window(folder))


def _group_census_png(folder: Path) -> Path | None:
    sessions = _parquet(folder, "sessions.parquet")
    if not len(sessions):
        return None
    tracks = (((_scenario(folder).get("stages") or {}).get("iop") or {}).get("tracks")) or {}
    sizes = {n: (int(t.get("min_group_size", 1)), int(t.get("max_group_size", 12))) for n, t in tracks.items()}
    return group_census_figure(sessions, Path(folder) / "figures" / "group_census.png", sizes)


def _calendar_png(folder: Path) -> Path | None:
    sessions = _parquet(folder, "sessions.parquet")
    if not len(sessions):
        return None
    sc = _scenario(folder)
    reps = int(sessions["replication"].nunique()) if "replication" in sessions else 1
    return calendar_figure(sessions, int(sc.get("horizon_days", 365)), reps, Path(folder) / "figures" / "session_calendar.png")


def _utilisation_png(folder: Path) -> Path | None:
    return utilisation_figure(_per_rep(folder), Path(folder) / "figures" / "staff_utilisation.png")


def _cost_png(folder: Path) -> Path:
    return cost_figure(_per_rep(folder), Path(folder) / "figures" / "cost_breakdown.png", currency_of(folder),
                       _window(folder))


def _money_png(folder: Path) -> Path | None:
    return money_figure(_per_rep(folder), Path(folder) / "figures" / "money.png", currency_of(folder), _window(folder))


#: The figures of a scenario folder, by name, in the order they are drawn (slowest first).
RUN_FIGURES = {
    "waitlist": lambda f: _levels_png(f, "waitlist_mean", "Waitlist length over time", "waiting", "no one waited",
                                      "waitlist.png"),
    "census": lambda f: _levels_png(f, "census_mean", "Census over time", "in care", "no one was in care", "census.png"),
    "session_calendar": _calendar_png,
    "group_census": _group_census_png,
    "funnel": _funnel_png,
    "cost_breakdown": _cost_png,
    "money": _money_png,
    "staff_utilisation": _utilisation_png,
}


def draw_run_figure(name: str, folder: Path) -> Path | None:
    """Draw one figure of a scenario folder (a run folder, or ``scenarios/<name>/`` of a comparison)."""
    return RUN_FIGURES[name](Path(folder))


def run_figures(folder: Path) -> list[Path]:
    """Every figure of a scenario folder, drawn in this process."""
    return [p for p in (draw_run_figure(n, folder) for n in RUN_FIGURES) if p is not None]


# --------------------------------------------------------------------------- comparisons


#: KPIs shown in a comparison's forest plot (those present), after the chosen KPI.
FOREST_KPIS = (*DECISION_KPIS, "iop_waitlist_mean", "iop_census_mean")
JUDGEMENT_COLOURS = {BETTER: GOOD, WORSE: BAD}


def forest_figure(diffs: pd.DataFrame, kpi: str, path: Path, currency: str = "USD") -> Path:
    """Paired differences from the baseline, one panel per KPI in that KPI's own units (95 % CIs).

    Green is better, red is worse, grey is no significant difference or a KPI
    that is neither better nor worse when higher (census).  The relative change
    is written beside each difference only where the baseline mean is not near zero.
    """
    judged = judge(diffs)
    names = list(dict.fromkeys(diffs["scenario"]))
    base, others = names[0], names[1:]
    kpis = [k for k in dict.fromkeys([*FOREST_KPIS, kpi]) if k in set(judged["kpi"])]
    if not kpis:
        kpis = list(dict.fromkeys(judged["kpi"]))[:8]
    n = max(len(others), 1)
    panel = 0.34 * n + 0.62
    fig, axes = plt.subplots(len(kpis) or 1, 1, figsize=(9.5, panel * max(len(kpis), 1) + 0.9), squeeze=False)
    for ax, k in zip(axes[:, 0], kpis):
        rows = judged[judged["kpi"] == k].set_index("scenario")
        label, unit = kpi_label(k)
        unit = str(rows["unit"].iloc[0]) if isinstance(rows["unit"].iloc[0], str) else unit
        lows, highs = [0.0], [0.0]
        for i, name in enumerate(others):
            if name not in rows.index:
                continue
            r = rows.loc[name]
            y = n - 1 - i
            color = JUDGEMENT_COLOURS.get(r["judgement"], GREY)
            lo, hi, d = float(r["diff_ci_low"]), float(r["diff_ci_high"]), float(r["diff"])
            if math.isfinite(lo) and math.isfinite(hi):
                ax.plot([lo, hi], [y, y], color=color, lw=2.4, solid_capstyle="butt")
                lows.append(lo)
                highs.append(hi)
            ax.plot([d], [y], "o", color=color, ms=6)
            lows.append(d)
            highs.append(d)
            text = "0" if d == 0 else signed(d, unit, currency).replace(" percentage points", " pp")
            rel = r["rel_change"]
            if math.isfinite(rel) and d != 0:
                text += f" ({rel * 100:+.0f} %)".replace("-", "−")
            word = r["judgement"] if r["judgement"] in (BETTER, WORSE, SAME, NOT_COMPARABLE) else "neither better nor worse"
            note = ax.text(1.02, y, f"{text}  {word}", transform=ax.get_yaxis_transform(), va="center", fontsize=8.5,
                           color=color)
            note.set_in_layout(False)
        lo_all, hi_all = min(lows), max(highs)
        width = hi_all - lo_all
        if width < 1e-9 * max(abs(lo_all), abs(hi_all), 1.0):
            width = {"fraction": 0.02, "currency": 200.0, "days": 2.0}.get(unit, 2.0)
            lo_all, hi_all = lo_all - width / 2, hi_all + width / 2
        pad = width * 0.12
        ax.set_xlim(lo_all - pad, hi_all + pad)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.set_ylim(-0.7, n - 0.3)
        ax.axvline(0, color="#333333", lw=0.8)
        ax.set_yticks(range(n), others[::-1] if len(others) > 1 else [""] * n, fontsize=8)
        if len(others) == 1:
            ax.tick_params(axis="y", length=0)
        unit_axis(ax, unit, currency, "x", points=True)
        ax.tick_params(axis="x", labelsize=8)
        words = {"fraction": "percentage points", "currency": symbol(currency).strip()}.get(unit, unit)
        ax.set_title(f"{people_label(label)} ({words})" if words else people_label(label), loc="left", fontsize=9.5)
        ax.grid(alpha=0.3, axis="x")
    who = others[0] if len(others) == 1 else "Each scenario"
    fig.suptitle(f"{who} minus {base}: paired differences with 95 % CIs, each in its own unit", fontsize=11)
    fig.text(0.01, 0.005, "green = better, red = worse, grey = no significant difference (or neither better nor worse); "
             "pp = percentage points", fontsize=8, color="#444444")
    fig.tight_layout(rect=(0, 0.02, 0.64, 0.97))
    return _save(fig, path)


def draw_comparison_figure(name: str, folder: Path, names: list[str] | None = None, kpi: str | None = None) -> Path:
    """Draw one figure of a comparison folder from its files (``forest``, ``waitlist_overlay``, ``census_overlay``);
    ``names`` and ``kpi`` default to those of its manifest."""
    folder = Path(folder)
    if names is None or kpi is None:
        mpath = folder / "manifest.json"
        man = json.loads(mpath.read_text(encoding="utf-8")) if mpath.exists() else {}
        names = names or man.get("scenarios") or sorted(p.name for p in (folder / "scenarios").iterdir() if p.is_dir())
        kpi = kpi or man.get("kpi") or "cost_per_completed_program"
    fig_dir = folder / "figures"
    if name == "forest":
        diffs = pd.read_csv(folder / "differences.csv")
        return forest_figure(diffs, kpi, fig_dir / "forest.png", currency_of(folder / "scenarios" / names[0]))
    levels = {n: _parquet(folder / "scenarios" / n, "levels.parquet") for n in names}
    if name == "waitlist_overlay":
        return overlay_figure(levels, "waitlist_mean", "Waitlist length over time, by scenario", "waiting",
                              fig_dir / "waitlist_overlay.png", "no one waited")
    if name == "census_overlay":
        return overlay_figure(levels, "census_mean", "Census over time, by scenario", "in care",
                              fig_dir / "census_overlay.png", "no one was in care")
    raise KeyError(name)


COMPARISON_FIGURES = ("forest", "waitlist_overlay", "census_overlay")


# --------------------------------------------------------------------------- sweeps


def _unit_text(unit: str, currency: str) -> str:
    return symbol(currency).strip() if unit == "currency" else "%" if unit == "fraction" else unit


def _value_text(v: float, unit: str, currency: str) -> str:
    if unit == "currency":
        return f"{symbol(currency)}{v:,.0f}"
    if unit == "fraction":
        return f"{100 * v:.0f} %"
    if v != 0 and abs(v) < 1:
        return f"{v:.2g}".replace("-", "−")
    return _tick(round(v, 1) if abs(v) < 100 else round(v))


def _money_setting(path: str) -> bool:
    """Whether a swept setting is an amount of money (a wage, a cost, an overhead, a payer's rate)."""
    parts = str(path).split(".")
    return any(w in parts[-1] for w in ("cost", "wage", "overhead")) or "rates" in parts[:-1]


def _setting_ticks(values, path: str, currency: str) -> list[str]:
    if _money_setting(path):
        return [_value_text(float(v), "currency", currency) for v in values]
    return [f"{v:g}" if isinstance(v, float) else str(v) for v in values]


def sweep_lines(summary: pd.DataFrame, factor: str, kpi: str, ylabel: str, path: Path, *, unit: str = "",
                currency: str = "USD") -> Path:
    s = summary.sort_values(f"factor:{factor}")
    x = s[f"factor:{factor}"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(x, s[kpi], "o-", lw=1.4, color=BLUE, label="mean of replications")
    # The band within what the KPI can be (no negative cost per program), as the tables show it.
    band = [clip_ci(m, lo, hi, unit, kpi) for m, lo, hi in zip(s[kpi], s[f"{kpi}:ci_low"], s[f"{kpi}:ci_high"])]
    ax.fill_between(x, [b[1] for b in band], [b[2] for b in band], alpha=0.3, color=BLUE, lw=0, label="95 % CI")
    ax.set_xlabel(factor_label(factor))
    ax.set_ylabel(ylabel)
    unit_axis(ax, unit, currency, "y")
    if _money_setting(factor):
        unit_axis(ax, "currency", currency, "x")
    else:
        count_axis(ax, "x")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{ylabel} as {factor_label(factor).lower()} varies", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def sweep_heatmap(summary: pd.DataFrame, fx: str, fy: str, kpi: str, label: str, path: Path, *, unit: str = "",
                  currency: str = "USD") -> Path:
    grid = summary.pivot_table(index=f"factor:{fy}", columns=f"factor:{fx}", values=kpi, aggfunc="mean")
    values = grid.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    cmap = plt.get_cmap("viridis")
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    im = ax.imshow(values, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(grid.shape[1]), _setting_ticks(grid.columns, fx, currency))
    ax.set_yticks(range(grid.shape[0]), _setting_ticks(grid.index, fy, currency))
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = values[i, j]
            if np.isfinite(v):
                r, g, b = to_rgb(cmap((v - vmin) / (vmax - vmin)))
                ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(j, i, _value_text(v, unit, currency), ha="center", va="center", color=ink, fontsize=9)
    ax.set_xlabel(factor_label(fx))
    ax.set_ylabel(factor_label(fy))
    bar = fig.colorbar(im, ax=ax)
    bar.set_label(label)
    unit_axis(bar.ax, unit, currency, "y")
    ax.set_title(label, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def sensitivity_figure(df: pd.DataFrame, method: str, kpi: str, path: Path, *, currency: str = "USD") -> Path:
    """Tornado-style bars: Sobol' S1 and ST, or Morris mu* (in the KPI's unit), with confidence half-widths."""
    if method == "sobol":
        d = df.sort_values("ST")
        y = np.arange(len(d))
        fig, ax = plt.subplots(figsize=(8.5, 0.5 * len(d) + 1.8))
        ax.barh(y + 0.2, d["ST"], 0.4, xerr=d["ST_conf"], label="total (ST)", color="#C44E52", capsize=3)
        ax.barh(y - 0.2, d["S1"], 0.4, xerr=d["S1_conf"], label="first order (S1)", color=BLUE, capsize=3)
        ax.set_xlabel("Sobol' index: share of the variance explained (95 % CI)")
    else:
        d = df.sort_values("mu_star")
        y = np.arange(len(d))
        fig, ax = plt.subplots(figsize=(8.5, 0.5 * len(d) + 1.8))
        ax.barh(y, d["mu_star"], xerr=d["mu_star_conf"], color=BLUE, capsize=3, label="mu* (95 % CI)")
        unit = kpi_label(kpi)[1]
        ax.set_xlabel(f"Morris mu*: mean absolute elementary effect ({_unit_text(unit, currency) or 'result'})")
        unit_axis(ax, unit, currency, "x")
        if not np.nanmax(np.abs(d["mu_star"].to_numpy(dtype=float)), initial=0.0) > 0:
            ax.text(0.5, 0.5, "No setting changed this result: every elementary effect was 0",
                    transform=ax.transAxes, ha="center", va="center", fontsize=10, color=GREY,
                    bbox={"facecolor": "white", "edgecolor": "none"})
    ax.set_yticks(y, [factor_label(f) for f in d["factor"]], fontsize=8)
    ax.legend(fontsize=8)
    ax.set_title(f"What drives {decap(people_label(kpi_label(kpi)[0]))}", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _save(fig, path)


def sweep_figures(folder: Path, sweep, summary: pd.DataFrame) -> list[Path]:
    """One figure per KPI of a sweep: a line over one factor, or a heatmap over a two-factor grid."""
    fig_dir = Path(folder) / "figures"
    fig_dir.mkdir(exist_ok=True)
    names = list(sweep.factors)
    written = []
    if not len(summary):
        return written
    currency = sweep_currency(folder, sweep)
    for kpi in sweep.kpis:
        label, unit = kpi_label(kpi)
        label = people_label(label)
        ylabel = f"{label} ({_unit_text(unit, currency)})" if unit else label
        if len(names) == 1:
            written.append(sweep_lines(summary, names[0], kpi, ylabel, fig_dir / f"{kpi}.png", unit=unit,
                                       currency=currency))
        elif len(names) == 2 and sweep.design.kind == "grid":
            written.append(sweep_heatmap(summary, names[0], names[1], kpi, ylabel, fig_dir / f"{kpi}.png", unit=unit,
                                         currency=currency))
    return written


def sensitivity_figures(folder: Path, method: str, indices: pd.DataFrame) -> list[Path]:
    """One tornado-style figure per KPI of a sensitivity table (from :func:`analyse_sweep`)."""
    fig_dir = Path(folder) / "figures"
    fig_dir.mkdir(exist_ok=True)
    currency = sweep_currency(folder)
    return [sensitivity_figure(indices[indices["kpi"] == kpi], method, kpi, fig_dir / f"sensitivity_{kpi}.png",
                               currency=currency) for kpi in dict.fromkeys(indices["kpi"])]
