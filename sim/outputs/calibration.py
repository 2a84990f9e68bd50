"""What a calibration folder shows: the calibrated scenario, figures and the report.

Everything is drawn from the folder's tables (``posterior.csv``, ``fit.csv``,
``identifiability.csv``, ``populations.csv``, ``summary.json``), so
``iopsim report`` can redraw a calibration without simulating again.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
from iopsim.lazy import pandas as pd
import yaml

from iopsim.files import atomic_write_text, read_manifest


# --------------------------------------------------------------------------- the calibrated scenario


def _override_tree(base_raw: dict, values: dict[str, float | int]) -> dict:
    """The smallest mapping that, merged by ``extends``, sets ``values`` (dotted paths) in ``base_raw``.

    ``extends`` merges mappings but replaces lists whole, so a path through a
    list writes the whole list from the base with the fitted items changed.
    """
    tree: dict = {}
    for path, v in values.items():
        parts = path.split(".")
        node, base = tree, base_raw
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = v
                break
            child = base.get(part) if isinstance(base, dict) else None
            if isinstance(child, list):
                lst = node.get(part)
                if not isinstance(lst, list):
                    lst = copy.deepcopy(child)
                    node[part] = lst
                _set_in_list(lst, parts[i + 1:], v)
                break
            node = node.setdefault(part, {})
            base = child if isinstance(child, dict) else {}
    return tree


def _set_in_list(node, parts: list[str], v) -> None:
    for j, part in enumerate(parts):
        key = int(part) if isinstance(node, list) else part
        if j == len(parts) - 1:
            node[key] = v
        else:
            node = node[key]


def _scalar(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _leaf_note(path: str, notes: dict[str, str]) -> str | None:
    """The comment of a leaf: its own note, or (a list written whole) the notes of its fitted items."""
    if path in notes:
        return notes[path]
    items = [(p[len(path) + 1:], n) for p, n in notes.items() if p.startswith(path + ".")]
    if not items:
        return None
    if len(items) == 1:
        return f"item {items[0][0]}: {items[0][1]}"
    return "; ".join(f"item {k}: {n}" for k, n in items)


def _emit(tree: dict, notes: dict[str, str], command: str, indent: int = 0, prefix: str = "") -> list[str]:
    lines = []
    pad = "  " * indent
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            lines.append(f"{pad}{k}:")
            lines += _emit(v, notes, command, indent + 1, path + ".")
        else:
            note = _leaf_note(path, notes)
            comment = f"  # {note}; by {command}" if note else ""
            lines.append(f"{pad}{k}: {_scalar(v)}{comment}")
    return lines


def calibrated_scenario_text(folder: Path, base_path: Path, base_raw: dict, base_name: str, spec_path: Path,
                             values: dict[str, float | int], ident: pd.DataFrame, targets: list[str],
                             command: str, aliases: dict[str, str] | None = None) -> str:
    """YAML of a scenario that ``extends`` the base with the fitted values, each commented."""
    rounded = {p: (v if isinstance(v, int) else float(f"{v:.4g}")) for p, v in values.items()}
    rel = os.path.relpath(Path(base_path).resolve(), Path(folder).resolve())
    by_path = {r["parameter"]: r for _, r in ident.iterrows()}
    notes = {}
    for p in rounded:
        r = by_path.get(p)
        if r is not None:
            notes[p] = (f"fitted (posterior median; 90 % {r['posterior_p05']:.3g} to {r['posterior_p95']:.3g}, "
                        f"{r['verdict']})")
        else:
            main = (aliases or {}).get(p)
            notes[p] = f"fitted (the value of {main})" if main else "fitted"
    head = [
        f"# {base_name}, calibrated: written by `{command}` ({spec_path}).",
        f"# Fitted to the targets {', '.join(targets)}; the fit is in fit.csv and report.html of this folder.",
        "# Every other value is the base scenario's.",
        f"extends: {rel}",
        f"name: {base_name}-calibrated",
    ]
    return "\n".join(head + _emit(_override_tree(base_raw, rounded), notes, command)
                     + _posterior_ranges(ident, values, command)) + "\n"


def _posterior_ranges(ident: pd.DataFrame, values: dict[str, float | int], command: str) -> list[str]:
    """``uncertain:`` entries giving each fitted value its posterior 90 % interval, so that
    ``compare --robust`` and ``plan --robust`` move a fitted value across what the data leave open."""
    lines = []
    for _, r in ident.iterrows():
        lo, hi = float(r["posterior_p05"]), float(r["posterior_p95"])
        if not (np.isfinite(lo) and np.isfinite(hi)) or r["parameter"] not in values:
            continue
        if isinstance(values[r["parameter"]], int):
            lo, hi = float(np.floor(lo)), float(np.ceil(hi))
        lines += [f"  {r['parameter']}:",
                  f"    range: [{lo:.4g}, {hi:.4g}]",
                  f"    note: {json.dumps(str(r['label']))}",
                  f"    source: {json.dumps(f'posterior 90 % interval of `{command}`')}"]
    if not lines:
        return []
    return ["", "# The fitted values' plausible ranges: their posterior 90 % intervals (see uncertain: in the docs).",
            "uncertain:", *lines]


# --------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from iopsim.outputs.figures import _save as save

    return save(fig, path)


def fit_figure(fit: pd.DataFrame, path: Path) -> Path:
    """Each target as a band (its tolerance) with the posterior predictive interval and the point estimate's check."""
    plt = _plt()
    n = len(fit)
    fig, ax = plt.subplots(figsize=(8.5, 0.42 * n + 1.6))
    y = np.arange(n)[::-1]
    for yi, (_, r) in zip(y, fit.iterrows()):
        ax.fill_betweenx([yi - 0.35, yi + 0.35], -1, 1, color="#E8F5E9", lw=0)
        z = lambda v: (v - r["centre"]) / r["tolerance"] if np.isfinite(v) else np.nan  # noqa: E731
        lo, hi = z(r["posterior_p05"]), z(r["posterior_p95"])
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([max(lo, -6), min(hi, 6)], [yi + 0.12] * 2, color="#4C72B0", lw=3, solid_capstyle="butt",
                    label="posterior predictive, 90 %" if yi == y[0] else None)
        pm = z(r["point_mean"])
        clo, chi = z(r["point_ci_low"]), z(r["point_ci_high"])
        if np.isfinite(pm):
            ax.errorbar([np.clip(pm, -6, 6)], [yi - 0.12],
                        xerr=[[max(pm - clo, 0) if np.isfinite(clo) else 0], [max(chi - pm, 0) if np.isfinite(chi) else 0]],
                        fmt="o", color="#2E7D32" if r["met"] else "#C62828", ms=5, capsize=2,
                        label="point estimate, mean and 95 % CI" if yi == y[0] else None)
    ax.axvline(0, color="#777", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels([f"{r['id']}  ({r['target']})" for _, r in fit.iterrows()], fontsize=8)
    ax.set_xlim(-6, 6)
    ax.set_xlabel("simulated − target, in tolerances (green band: target met)")
    ax.set_title(f"Fit to {n} targets: {int(fit['met'].sum())} met at the point estimate", loc="left", fontsize=11)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def marginal_figure(post: pd.DataFrame, ident: pd.DataFrame, path: Path) -> Path:
    """Weighted histogram of each parameter's posterior over its prior range."""
    plt = _plt()
    rows = list(ident.itertuples())
    k = len(rows)
    cols = min(k, 3)
    nr = math.ceil(k / cols)
    fig, axes = plt.subplots(nr, cols, figsize=(3.4 * cols, 2.6 * nr), squeeze=False)
    for ax, r in zip(axes.flat, rows):
        x = post[r.parameter].to_numpy(dtype=float)
        lo, hi = r.prior_p05, r.prior_p95
        span = (hi - lo) or 1.0
        bins = np.linspace(min(x.min(), lo) - 0.05 * span, max(x.max(), hi) + 0.05 * span, 25)
        ax.hist(x, bins=bins, weights=post["weight"], color="#4C72B0", alpha=0.8)
        ax.axvspan(lo, hi, color="#eee", zorder=0, label="prior, 90 %")
        ax.axvline(r.posterior_median, color="#C62828", lw=1.2, label="median")
        ax.set_title(_wrap(r.label), fontsize=8.5, loc="left")
        ax.set_yticks([])
        ax.tick_params(labelsize=7.5)
        ax.set_xlabel(f"{r.verdict}: {r.width_ratio:.0%} of prior width", fontsize=7.5)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, frameon=False)
    fig.suptitle("Posterior of each free parameter (last population)", x=0.01, ha="left", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def pairs_figure(post: pd.DataFrame, ident: pd.DataFrame, path: Path) -> Path | None:
    """Scatter of every pair of parameters, point size by weight."""
    names = list(ident["parameter"])
    labels = list(ident["label"])
    k = len(names)
    if k < 2:
        return None
    plt = _plt()
    fig, axes = plt.subplots(k - 1, k - 1, figsize=(2.5 * (k - 1) + 0.8, 2.5 * (k - 1) + 0.6), squeeze=False)
    w = post["weight"].to_numpy(dtype=float)
    s = 6 + 60 * w / w.max()
    for i in range(1, k):
        for j in range(k - 1):
            ax = axes[i - 1][j]
            if j >= i:
                ax.axis("off")
                continue
            ax.scatter(post[names[j]], post[names[i]], s=s, color="#4C72B0", alpha=0.5, lw=0)
            ax.tick_params(labelsize=6.5)
            if j == 0:
                ax.set_ylabel(_wrap(labels[i], 22), fontsize=7)
            if i == k - 1:
                ax.set_xlabel(_wrap(labels[j], 22), fontsize=7)
    fig.suptitle("Pairs of parameters in the posterior (size: weight)", x=0.01, ha="left", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _wrap(text: str, width: int = 34) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text.replace(".", ". ").replace(". ", ".\u200b"), width)) or text


def calibration_figures(folder: Path) -> list[Path]:
    folder = Path(folder)
    post = pd.read_csv(folder / "posterior.csv")
    fit = pd.read_csv(folder / "fit.csv")
    ident = pd.read_csv(folder / "identifiability.csv")
    out = [fit_figure(fit, folder / "figures" / "fit.png"), marginal_figure(post, ident, folder / "figures" / "marginals.png")]
    p = pairs_figure(post, ident, folder / "figures" / "pairs.png")
    return out + ([p] if p else [])


# --------------------------------------------------------------------------- report


def _img(path: Path) -> str | None:
    """A PNG as a data URI, so that the report is one self-contained file."""
    import base64

    if not path.exists():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_calibration_report(folder: Path, man: dict | None = None) -> Path:
    """``report.html`` of a calibration folder: the fit, what the targets pin down, the figures, the methods."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    folder = Path(folder)
    man = man or read_manifest(folder, "calibration")
    figs = folder / "figures"
    if not all((figs / f).exists() for f in ("fit.png", "marginals.png")):
        calibration_figures(folder)
    fit = pd.read_csv(folder / "fit.csv")
    ident = pd.read_csv(folder / "identifiability.csv")
    pops = pd.read_csv(folder / "populations.csv")
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))

    def g(v):
        return "–" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.3g}"

    ctx = {
        "manifest": man, "summary": summary,
        "fit": [{**r, "sim": f"{g(r['posterior_p05'])} to {g(r['posterior_p95'])}",
                 "point": g(r["point_mean"]), "ci": f"{g(r['point_ci_low'])}–{g(r['point_ci_high'])}"}
                for r in fit.to_dict(orient="records")],
        "ident": ident.to_dict(orient="records"),
        "missed": [f"{r['id']} ({g(r['point_mean'])} against {r['target']})"
                   for r in fit.to_dict(orient="records") if not r["met"]],
        "pops": [{"population": int(r["population"]), "epsilon": g(r["epsilon"]), "evaluations": int(r["evaluations"]),
                  "ess": f"{r['ess']:.1f}"} for r in pops.to_dict(orient="records")],
        "figures": [{"src": _img(figs / f), "caption": c} for f, c in (
            ("fit.png", "Each target: the green band is its tolerance; blue, the 90 % interval of the simulated means "
                        "of the accepted parameter sets; the dot, the point estimate run again with fresh replications."),
            ("marginals.png", "Posterior of each parameter (weighted histogram) over the 90 % range of its prior (grey)."),
            ("pairs.png", "Pairs of parameters: a ridge or a cloud that fills the panel shows what the targets cannot separate."),
        ) if (figs / f).exists()],
        "versions": man.get("versions", {}), "references": man.get("references", {}),
        "has_scenario": (folder / "calibrated.yaml").exists(),
    }
    env = Environment(loader=PackageLoader("iopsim.outputs", "templates"), autoescape=select_autoescape(default=True))
    html = env.get_template("calibration.html.j2").render(**ctx)
    out = folder / "report.html"
    atomic_write_text(out, html)
    return out
