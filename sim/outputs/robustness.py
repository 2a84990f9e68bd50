"""What a robustness analysis says: which assumptions a verdict rests on, in words, a table and a tornado.

Everything is drawn from ``robustness.csv`` of a comparison folder (written by
``iopsim compare --robust``), one row per compared scenario and assumption.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
from iopsim.lazy import pandas as pd

from iopsim.analysis.kpis import kpi_label
from iopsim.analysis.verdict import direction
from iopsim.outputs.answer import decap, factor_label, people_label, short, signed, span


def assumption_label(row) -> str:
    note = row.get("note") if isinstance(row.get("note"), str) else ""
    return note or factor_label(row["assumption"])


def assumption_value(path: str, v: float) -> str:
    """An assumption's value in words: shares in percent, other numbers as they are."""
    if not math.isfinite(v):
        return "–"
    share = any(k in path for k in ("availability", "placement", "share", "probability", "attendance", "barrier",
                                    "_rate", ".payers."))
    return short(v, "fraction") if share and 0 <= v <= 1 else f"{v:g}"


def _better(kpi: str, diff: float) -> str | None:
    way = direction(kpi)
    if way == "neutral" or not math.isfinite(diff) or diff == 0:
        return None
    return "better" if (diff < 0) == (way == "lower") else "worse"


def the_phrase(label: str) -> str:
    """'Share of IOP clients ...' -> 'the share of IOP clients ...' (inside a sentence)."""
    text = decap(label)
    return text if text.startswith(("the ", "a ", "an ")) else f"the {text}"


def robustness_sentences(table: pd.DataFrame, currency: str = "USD") -> list[str]:
    """One sentence per compared scenario: robust to every declared assumption, or which ones it rests on."""
    if table is None or not len(table):
        return []
    out = []
    for name, g in table.groupby("scenario", sort=False):
        kpi = g["kpi"].iloc[0]
        label, unit = kpi_label(kpi)
        what = decap(people_label(label))
        base = g["baseline"].iloc[0]
        diff = float(g["diff"].iloc[0])
        verdict = _better(kpi, diff)
        flipped = g[g["flips"].astype(bool)]
        n = len(g)
        if not len(flipped):
            side = f"stays {verdict} than {base}" if verdict else "does not change sign"
            out.append(f"On {what}, {name} {side} at both ends of the declared range of each of the {n} "
                       f"assumption{'s' if n > 1 else ''}: the comparison is robust to all declared assumptions.")
            continue
        parts = []
        for _, r in flipped.iterrows():
            t = r["threshold"]
            rng = span(r["threshold_low"], r["threshold_high"], bare=True) if math.isfinite(r["threshold_low"]) \
                and math.isfinite(r["threshold_high"]) else ""
            pts = sorted(json.loads(r["points"]))
            above = pts[-1][1]  # the difference at the top of the range
            side = _better(kpi, above)
            where = "at least" if side == verdict else "at most"
            if math.isfinite(t):
                tv = assumption_value(r["assumption"], t)
                a_txt, b_txt = assumption_value(r["assumption"], r["threshold_low"]), assumption_value(r["assumption"], r["threshold_high"])
                if a_txt.endswith(" %") and b_txt.endswith(" %"):
                    a_txt = a_txt[:-2]  # 0–0.9 %, not 0 %–0.9 %
                lo_hi = f" ({a_txt}–{b_txt})" if rng else ""
                parts.append(f"{the_phrase(assumption_label(r))} is {where} {tv}{lo_hi}")
            else:
                parts.append(f"{the_phrase(assumption_label(r))} stays near its current value")
        cond = "; and ".join(parts)
        if verdict:
            out.append(f"On {what}, {name} is {verdict} than {base} only if {cond}. It depends on "
                       f"{len(flipped)} of the {n} declared assumptions.")
        else:
            out.append(f"On {what}, the sign of the difference between {name} and {base} changes with "
                       f"{len(flipped)} of the {n} declared assumptions: {cond}.")
    return out


def robustness_rows(table: pd.DataFrame, currency: str = "USD") -> list[dict]:
    """The table of the report and the terminal: each assumption, its range, the difference at both ends."""
    rows = []
    for _, r in table.iterrows():
        unit = kpi_label(r["kpi"])[1]
        t = r["threshold"]
        rows.append({
            "scenario": r["scenario"], "assumption": assumption_label(r), "path": r["assumption"],
            "source": r["source"] if isinstance(r["source"], str) else "",
            "range": f"{assumption_value(r['assumption'], r['low'])} to {assumption_value(r['assumption'], r['high'])}",
            "current": assumption_value(r["assumption"], r["current"]),
            "at_low": signed(r["diff_at_low"], unit, currency),
            "at_low_ci": span(r["diff_at_low_ci_low"], r["diff_at_low_ci_high"], unit, currency, style=signed),
            "at_high": signed(r["diff_at_high"], unit, currency),
            "at_high_ci": span(r["diff_at_high_ci_low"], r["diff_at_high_ci_high"], unit, currency, style=signed),
            "flips": bool(r["flips"]),
            "threshold": assumption_value(r["assumption"], t) if math.isfinite(t) else "",
        })
    return rows


def tornado_figure(table: pd.DataFrame, path: Path, currency: str = "USD") -> Path | None:
    """The difference in the selection KPI as each assumption moves across its range, widest swing on top."""
    from iopsim.outputs.figures import BAD, BLUE, GREY, _save, plt, unit_axis

    if table is None or not len(table):
        return None
    names = list(dict.fromkeys(table["scenario"]))
    kpi = table["kpi"].iloc[0]
    label, unit = kpi_label(kpi)
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(len(names), 1, figsize=(9.0, 0.55 * len(table) / len(names) + 2.0), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        g = table[table["scenario"] == name].copy()
        base = float(g["diff"].iloc[0])
        g["lo"] = base + g["change_at_low"].astype(float)
        g["hi"] = base + g["change_at_high"].astype(float)
        g["swing"] = (g["hi"] - g["lo"]).abs()
        g = g.sort_values("swing")
        ys = np.arange(len(g))
        for y, (_, r) in zip(ys, g.iterrows()):
            color = BAD if r["flips"] else BLUE
            ax.barh(y, r["lo"] - base, left=base, color=color, alpha=0.45, height=0.6)
            ax.barh(y, r["hi"] - base, left=base, color=color, alpha=0.9, height=0.6)
        ax.axvline(base, color=GREY, lw=1)
        ax.axvline(0, color="black", lw=0.8, ls=":")
        ax.set_yticks(ys, [textwrap.fill(assumption_label(r), 36) for _, r in g.iterrows()], fontsize=8.5)
        unit_axis(ax, unit, currency, "x", points=True)
        ax.set_title(f"{name} − {g['baseline'].iloc[0]}: {decap(people_label(label))}", fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(handles=[Patch(color=BLUE, alpha=0.45, label="low end of the range"),
                           Patch(color=BLUE, alpha=0.9, label="high end of the range"),
                           Patch(color=BAD, alpha=0.9, label="the sign changes"),
                           plt.Line2D([], [], color=GREY, label="as compared")],
                  fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, frameon=False)
    for ax in axes[:, 0]:
        ax.set_xlabel(f"Difference in {decap(people_label(label))}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
