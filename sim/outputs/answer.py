"""Words and tables for people: the answer in sentences, staffing, groups, warnings, the verdict.

Everything here is built from what a run folder holds (the KPI summary, the
KPIs per replication, the resolved scenario, the manifest's warnings and, for
groups, the session records), so the report, the terminal and a notebook say
the same thing in the same words.  Numbers carry their unit and the scenario's
currency; every range in brackets is a 95 % confidence interval across
replications.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from iopsim.lazy import pandas as pd
import yaml

from iopsim.analysis.kpis import STAGE_LABELS, kpi_label
from iopsim.analysis.stats import mean_ci, undefined_unless_all
from iopsim.analysis.verdict import (BETTER, DECISION_KPIS, NOT_COMPARABLE, SAME, WORSE, Verdict, direction,
                                     growing_waitlists)
from iopsim.schema.scenario import is_index

#: Currency codes with a symbol; any other code is written before the amount ("CHF 1,200").
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹", "CAD": "CA$", "AUD": "A$",
                    "NZD": "NZ$", "MXN": "MX$"}
MINUS = "−"
#: Share of held sessions below the minimum group size above which groups are called small (as the checks do).
SMALL_GROUPS = 0.25
WEEKDAY_NAMES = {"mon": "Mon", "tue": "Tue", "wed": "Wed", "thu": "Thu", "fri": "Fri", "sat": "Sat", "sun": "Sun"}

#: Short labels for the terminal, where a line has 80 columns.
SHORT_LABELS = {
    "referrals": "Referrals",
    "readmissions": "Returns after relapse",
    "admitted_to_treatment": "Admitted to treatment",
    "programs_completed": "Programs completed",
    "referral_admitted_within_7_days": "Admitted within 7 days",
    "referral_admitted_within_14_days": "Admitted within 14 days",
    "referral_admitted_within_30_days": "Admitted within 30 days",
    "referral_lost_before_admission": "Lost before admission",
    "referral_to_admission_median_days": "Days to admission, median",
    "referral_to_admission_p90_days": "Days to admission, 90th pct",
    "referral_to_admission_mean_days_admitted": "Days to admission, admitted",
    "cost_total": "Total cost",
    "cost_per_completed_program": "Cost per completed program",
    "cost_per_admission": "Cost per admission",
    "cost_per_patient_week": "Cost per patient-week",
    "iop_cost_per_client_week": "IOP cost per client-week",
    "iop_cost_per_episode": "IOP cost per admission",
    "labour_share_of_cost": "Labour share of cost",
    "iop_admitted_wait_mean_days": "IOP days waited if admitted",
    "iop_admitted_wait_p90_days": "IOP days waited, 90th pct",
    "iop_waitlist_mean": "IOP waitlist, average",
    "iop_waitlist_max": "IOP waitlist, longest",
    "iop_reneged": "Left the IOP waitlist",
    "iop_census_mean": "IOP census, average",
    "revenue_billed": "Billed",
    "revenue_not_collected": "Denied or not collected",
    "revenue_total": "Revenue collected",
    "margin_total": "Margin (revenue - cost)",
    "cost_recovery": "Revenue / cost",
    "margin_per_completed_program": "Margin per completed program",
    "break_even_iop_census": "Break-even IOP census",
}


# --------------------------------------------------------------------------- numbers


def symbol(currency: str | None) -> str:
    """``$`` for USD, ``€`` for EUR ...; otherwise the code and a space."""
    code = (currency or "USD").strip()
    return CURRENCY_SYMBOLS.get(code.upper(), f"{code} ")


def _num(v: float) -> str:
    a = abs(v)
    return f"{v:,.0f}" if a >= 100 else f"{v:,.1f}" if a >= 10 else f"{v:,.2f}"


def fmt(value, unit: str = "", currency: str = "USD") -> str:
    """A number with its unit, for people: '$12,345', '4.2 days', '37.0 %'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    v = float(value)
    if not math.isfinite(v):
        return "–"
    if unit == "currency":
        sign = "-" if v < 0 else ""
        return f"{sign}{symbol(currency)}{abs(v):,.0f}"
    if unit == "fraction":
        return f"{100 * v:.1f} %"
    return f"{_num(v)} {unit or ''}".strip()


def short(value, unit: str = "", currency: str = "USD") -> str:
    """Like `fmt`, with days to one decimal and shares to whole percent (for sentences)."""
    if value is None or not math.isfinite(float(value)):
        return "–"
    v = float(value)
    if unit == "fraction":
        return f"{100 * v:.0f} %" if abs(v) >= 0.1 or v == 0 else f"{100 * v:.1f} %"
    if unit == "days":
        return f"{v:,.1f} days" if abs(v) < 100 else f"{v:,.0f} days"
    if unit in ("patients", "sessions", "hours") and abs(v) >= 10:
        return f"{v:,.0f}"
    if unit in ("patients", "sessions", "hours", "clients", "people"):
        return f"{v:,.1f}"
    return fmt(v, unit, currency)


def signed(value, unit: str = "", currency: str = "USD") -> str:
    """A difference with its sign and unit: '+14.6 patients', '−$469', '+4.6 percentage points'."""
    if value is None or not math.isfinite(float(value)):
        return "–"
    v = float(value)
    sign = "+" if v > 0 else MINUS if v < 0 else "±"
    a = abs(v)
    if unit == "currency":
        return f"{sign}{symbol(currency)}{a:,.0f}"
    if unit == "fraction":
        return f"{sign}{100 * a:.1f} percentage points"
    return f"{sign}{_num(a)} {unit or ''}".strip()


def span(lo, hi, unit: str = "", currency: str = "USD", style: Callable = fmt, bare: bool = False) -> str:
    """A 95 % CI for people: '8.1–9.9 days', '$6,630–$6,970', '−$530 to −$408'; ``bare`` drops the unit."""
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        return ""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    a, b = style(lo, unit, currency), style(hi, unit, currency)
    m = re.search(r"\s[^\d\s,.+−-]+(?: [^\d\s,.]+)*$", b)
    suffix = m.group(0) if m else ""
    if suffix and a.endswith(suffix):
        a = a[: -len(suffix)]
    if bare and suffix:
        b = b[: -len(suffix)]
    joiner = " to " if style in (signed, brief) or lo < 0 or hi < 0 else "–"
    return f"{a}{joiner}{b}"


#: KPIs that can be below 0 (a margin is a loss), and shares that can exceed 1 (revenue over cost).
SIGNED = ("margin_",)
UNCAPPED = ("cost_recovery",)


def clip_ci(mean: float, lo: float, hi: float, unit: str, kpi: str = "") -> tuple[float, float, float]:
    """A CI within what a KPI can be: shares within 0-1 and counts, days and money not below 0.

    With few replications a Student-t interval can reach past those bounds;
    the part beyond them is impossible, so it is not shown.  A margin can be
    negative and revenue can exceed cost (``kpi`` in `SIGNED`, `UNCAPPED`): not clipped there.
    """
    if not math.isfinite(mean) or mean < 0 or kpi.startswith(SIGNED):
        return mean, lo, hi
    if kpi in UNCAPPED:
        unit = ""
    if math.isfinite(lo):
        lo = max(lo, 0.0)
    if unit == "fraction" and math.isfinite(hi) and mean <= 1:
        hi = min(hi, 1.0)
    return mean, lo, hi


def human(identifier: str) -> str:
    """``intake_clinician`` -> ``intake clinician``."""
    return str(identifier).replace("_", " ").strip()


def people_label(label: str) -> str:
    """A KPI label with identifiers written as words ('Labour cost: intake clinician')."""
    return re.sub(r"\b(\w+_\w+)\b", lambda m: human(m.group(1)), str(label))


def plural(word: str, n: float) -> str:
    if round(n) == 1:
        return word
    if re.search(r"(s|x|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def listing(items: list[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def decap(text: str) -> str:
    """Lower-case the first letter, unless it starts an abbreviation ('IOP', 'PHP')."""
    return text if text[1:2].isupper() else text[:1].lower() + text[1:]


# --------------------------------------------------------------------------- what a folder knows


@dataclass
class Facts:
    """What one scenario's results say, with helpers for means and CIs.

    ``summary`` is indexed by KPI; ``per_rep`` has one row per replication;
    ``scenario`` is the resolved scenario as a plain mapping.
    """

    name: str
    summary: pd.DataFrame
    per_rep: pd.DataFrame
    scenario: dict
    warnings: list[str] = field(default_factory=list)
    sessions: pd.DataFrame | None = None
    levels: pd.DataFrame | None = None

    @classmethod
    def from_folder(cls, folder: Path, name: str | None = None, warnings: list[str] | None = None) -> "Facts":
        folder = Path(folder)
        summary = pd.read_csv(folder / "summary.csv")
        per_rep = pd.read_csv(folder / "replications.csv") if (folder / "replications.csv").exists() else pd.DataFrame()
        scenario = yaml.load((folder / "scenario.yaml").read_text(encoding="utf-8"),
                             Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        sessions = pd.read_parquet(folder / "sessions.parquet") if (folder / "sessions.parquet").exists() else None
        levels = pd.read_parquet(folder / "levels.parquet") if (folder / "levels.parquet").exists() else None
        return cls(name or scenario.get("name", folder.name), summary, per_rep, scenario, list(warnings or []),
                   sessions, levels)

    def __post_init__(self):
        if "kpi" in self.summary.columns:
            self.summary = self.summary.set_index("kpi")

    # -- the scenario
    @property
    def currency(self) -> str:
        return str((self.scenario.get("costs") or {}).get("currency") or "USD")

    @property
    def horizon(self) -> float:
        return float(self.scenario.get("horizon_days") or 0)

    @property
    def warmup(self) -> float:
        return float(self.scenario.get("warmup_days") or 0)

    @property
    def years(self) -> float:
        """Length of the observation window, in years."""
        return max(self.horizon - self.warmup, 1.0) / 365.0

    @property
    def tracks(self) -> dict:
        iop = (self.scenario.get("stages") or {}).get("iop") or {}
        return iop.get("tracks") or {}

    @property
    def roles(self) -> list[str]:
        return [k[len("staff_"):-len("_headcount")] for k in self.summary.index
                if k.startswith("staff_") and k.endswith("_headcount")]

    # -- numbers
    def has(self, kpi: str) -> bool:
        return kpi in self.summary.index and math.isfinite(float(self.summary.loc[kpi, "mean"]))

    def in_summary(self, kpi: str) -> bool:
        return kpi in self.summary.index

    def unreached(self, kpi: str, share: str) -> str:
        """Why a Kaplan-Meier quantile has no value: in how many replications it was not reached."""
        reps = len(self.per_rep) if len(self.per_rep) else None
        n = self.summary.loc[kpi, "n"] if kpi in self.summary.index else 0
        n = int(n) if n == n else 0
        why = "those who wait longest leave, or are still waiting at the end"
        if reps and 0 < n < reps:
            return (f"in {reps - n} of {reps} replications the time by which {share} would be admitted is not "
                    f"reached ({why}), so that percentile has no value")
        return f"the time by which {share} would be admitted is never reached ({why}), so that percentile has no value"

    def mean(self, kpi: str) -> float:
        return float(self.summary.loc[kpi, "mean"]) if kpi in self.summary.index else math.nan

    def ci(self, kpi: str, scale: float = 1.0) -> tuple[float, float, float]:
        """(mean, CI low, CI high) of a KPI, times ``scale``; the CI kept within what the KPI can be."""
        if kpi not in self.summary.index:
            return math.nan, math.nan, math.nan
        r = self.summary.loc[kpi]
        unit = r["unit"] if "unit" in r and isinstance(r["unit"], str) else ""
        m, lo, hi = clip_ci(float(r["mean"]), float(r["ci_low"]), float(r["ci_high"]), unit, kpi)
        return m * scale, lo * scale, hi * scale

    def derived(self, fn: Callable[[pd.DataFrame], pd.Series]) -> tuple[float, float, float]:
        """(mean, CI low, CI high) of a non-negative quantity computed per replication from the KPIs."""
        try:
            values = fn(self.per_rep)
        except KeyError:
            return math.nan, math.nan, math.nan
        m, _sd, lo, hi, _n = mean_ci(np.asarray(values, dtype=float))
        return clip_ci(m, lo, hi, "patients")

    def say(self, triple, unit: str, style: Callable = short) -> str:
        """'9.0 days (8.1–9.9)'."""
        m, lo, hi = triple
        text = style(m, unit, self.currency)
        rng = span(lo, hi, unit, self.currency, style, bare=True)
        return f"{text} ({rng})" if rng else text


def role_name(role: str) -> str:
    return human(role)


def staff_phrase(f: Facts) -> str:
    """'1 intake clinician, 2 counselors and 1 nurse'."""
    parts = []
    for role in f.roles:
        n = f.mean(f"staff_{role}_headcount")
        if math.isfinite(n):
            parts.append(f"{n:.0f} {plural(role_name(role), n)}")
    return listing(parts)


def groups_phrase(f: Facts) -> str:
    """'2 IOP groups (day and evening)', or the IOP's places when it has no tracks."""
    tracks = f.tracks
    if tracks:
        counts = {n: int(t.get("groups", 1)) for n, t in tracks.items()}
        total = sum(counts.values())
        names = [human(n) if c == 1 else f"{c} {human(n)}" for n, c in counts.items()]
        return f"{total} IOP {plural('group', total)} ({listing(names)})"
    iop = (f.scenario.get("stages") or {}).get("iop") or {}
    cap = iop.get("capacity")
    return f"{cap} IOP places" if cap else ""


def schedule(track: dict) -> str:
    """'Mon/Wed/Thu 09:00, 3 h'."""
    out = []
    for s in track.get("sessions") or []:
        days = "/".join(WEEKDAY_NAMES.get(d, d) for d in s.get("days", []))
        h = float(s.get("start_hour", 0))
        out.append(f"{days} {int(h):02d}:{int(round((h - int(h)) * 60)):02d}, {float(s.get('hours', 0)):g} h")
    return "; ".join(out)


def _nobody(f: Facts, track: str) -> float:
    """Share of the sessions due (held, or not held for want of members) at which nobody attended."""
    s = f.sessions
    if s is None or not len(s):
        return math.nan
    s = s[(s["track"] == track) & (s["t_start"] >= f.warmup) & s["status"].isin(["held", "no_clients"])]
    if not len(s):
        return math.nan
    return float(((s["status"] == "no_clients") | (s["attendees"] <= 0)).mean())


# --------------------------------------------------------------------------- the answer of a run


def run_answer(f: Facts) -> list[str]:
    """A few sentences that answer "what will this plan give?", with 95 % CIs and units."""
    out: list[str] = []
    staff, groups = staff_phrase(f), groups_phrase(f)
    setup = f"{staff}, and {groups}" if staff and groups else staff or groups
    lead = f"With {setup}, " if setup else ""
    if f.has("referral_admitted_within_14_days"):
        out.append(f"{lead}{f.say(f.ci('referral_admitted_within_14_days'), 'fraction')} of referred patients are "
                   "admitted to treatment within 14 days.")
    if f.has("referral_lost_before_admission"):
        lost_year = f.derived(lambda d: d["referral_lost_before_admission"] * d["referral_cohort"] / f.years)
        s = (f"{f.say(f.ci('referral_lost_before_admission'), 'fraction')} are lost before admission, "
             f"about {f.say(lost_year, 'patients')} a year")
        where = _main_loss(f)
        out.append(capital(s) + (f", {where}" if where else "") + ".")
    if not out and lead:
        out.append(f"{lead}this is what the model expects.")
    if f.has("referral_to_admission_p90_days") or f.has("referral_to_admission_median_days"):
        p50, p90 = f.ci("referral_to_admission_median_days"), f.ci("referral_to_admission_p90_days")
        if math.isfinite(p90[0]):
            out.append(f"Of those who do not give up, half are admitted within {short(p50[0], 'days')} of referral "
                       f"and 90 % within {f.say(p90, 'days')}.")
        elif math.isfinite(p50[0]):
            out.append(f"Of those who do not give up, half are admitted within {f.say(p50, 'days')} of referral; "
                       f"{f.unreached('referral_to_admission_p90_days', '90 %')}.")
        elif f.in_summary("referral_to_admission_median_days"):
            out.append(f"{capital(f.unreached('referral_to_admission_median_days', 'half'))}.")
    firsts = []
    for t in f.tracks:
        k = f"iop_track_{t}_referral_to_first_session_p90_days"
        if f.has(k):
            firsts.append(f"{f.say(f.ci(k), 'days')} on the {human(t)} track")
    if firsts:
        out.append(f"Referred straight to IOP, 90 % of those who stay attend a first group session within "
                   f"{listing(firsts)}.")
    money = []
    if f.has("programs_completed"):
        money.append(f"About {f.say(f.ci('programs_completed', 1 / f.years), 'patients')} programs are completed a year")
    if f.has("cost_per_completed_program"):
        money.append(f"a completed program costs {f.say(f.ci('cost_per_completed_program'), 'currency')}")
    if f.has("cost_total"):
        money.append(f"the program costs {short(f.mean('cost_total') / f.years, 'currency', f.currency)} a year in all")
    if money:
        out.append(capital(listing(money) if len(money) < 3 else f"{money[0]}; {money[1]}, and {money[2]}") + ".")
    out.extend(money_sentences(f))
    groups = group_sentence(f)
    if groups:
        out.append(groups)
    staff = staff_sentence(f)
    if staff:
        out.append(staff)
    return out


def _loss(triple) -> tuple[float, float, float]:
    """A negative amount as a positive loss (its CI flipped)."""
    m, lo, hi = triple
    return -m, -hi, -lo


def money_sentences(f: Facts) -> list[str]:
    """Revenue, margin and the break-even IOP census (when the scenario has payers)."""
    if not f.has("revenue_total") or not f.has("margin_total"):
        return []
    yr = 1 / f.years
    margin = f.ci("margin_total", yr)
    per = f.ci("margin_per_completed_program")
    revenue = f.say(f.ci("revenue_total", yr), "currency")
    cover = f.say(f.ci("cost_recovery"), "fraction")
    if margin[2] < 0:  # a loss, whatever the noise
        text = (f"Revenue covers {cover} of the cost: the site collects {revenue} a year and loses "
                f"{f.say(_loss(margin), 'currency')} a year")
        if math.isfinite(per[0]):
            text += f", {f.say(_loss(per), 'currency')} per completed program"
    elif margin[1] > 0:  # a margin
        text = f"The site collects {revenue} a year, {f.say(margin, 'currency')} more than it costs"
        if math.isfinite(per[0]):
            text += f", {f.say(per, 'currency')} per completed program"
    else:
        text = (f"The site collects {revenue} a year, about what it costs ({cover}): somewhere between a loss of "
                f"{short(-margin[1], 'currency', f.currency)} and a margin of {short(margin[2], 'currency', f.currency)}"
                " a year")
    out = [text + "."]
    if not f.has("iop_revenue_per_client_day"):
        return out
    census = f.mean("iop_census_mean")
    places = _iop_places(f)
    now = f"against {short(census, 'clients')} now" + (f" and {places} places" if places else "")
    r, v = f.mean("iop_revenue_per_client_day"), f.mean("iop_variable_cost_per_client_day")
    if f.has("break_even_iop_census"):
        be = f.ci("break_even_iop_census")
        n, reps = int(f.summary.loc["break_even_iop_census", "n"]), len(f.per_rep)
        some = (f" (in the {n} of {reps} replications where an IOP client-day earns more than it adds to cost)"
                if reps and n < reps else "")
        if be[0] <= 0:
            out.append(f"It covers its cost at any IOP census, at this staffing and payer mix{some}.")
        else:
            reach = " (more than its places: it needs more groups, and so more cost)" if places and be[0] > places else ""
            out.append(f"It breaks even at a mean IOP census of {f.say(be, 'patients')} clients a day, {now}, "
                       f"at this staffing and payer mix{reach}{some}.")
    elif math.isfinite(r) and math.isfinite(v):
        day = (f"an IOP client-day brings in {short(r, 'currency', f.currency)} and adds "
               f"{short(v, 'currency', f.currency)} of cost")
        if margin[0] >= 0:
            out.append(f"More IOP clients would not add to the margin: {day}; it is the rest of the site that "
                       "covers the cost.")
        else:
            out.append(f"No IOP census breaks even: {day}, {now}.")
    return out


def _iop_places(f: Facts) -> int | None:
    if f.tracks:
        return sum(int(t.get("groups", 1)) * int(t.get("max_group_size", 12)) for t in f.tracks.values())
    cap = ((f.scenario.get("stages") or {}).get("iop") or {}).get("capacity")
    return int(cap) if cap else None


def _main_loss(f: Facts) -> str:
    losses = [(s, f.mean(f"referral_lost_at_{s}")) for s in STAGE_LABELS if f.has(f"referral_lost_at_{s}")]
    losses = [(s, v) for s, v in losses if v > 0]
    if not losses:
        return ""
    stage, v = max(losses, key=lambda x: x[1])
    return f"most of them while waiting for {STAGE_LABELS[stage].split('/')[0].lower() if stage != 'iop' else 'IOP'}" + (
        f" ({short(v, 'fraction')} of referrals)" if len(losses) > 1 else "")


def group_sentence(f: Facts) -> str:
    parts = []
    small = False
    for t, cfg in f.tracks.items():
        k = f"iop_track_{t}_group_census_mean"
        if not f.has(k):
            continue
        below = f.mean(f"iop_track_{t}_share_sessions_below_min")
        small |= math.isfinite(below) and below > SMALL_GROUPS
        first = not parts
        text = f"the {human(t)} group averages {short(f.mean(k), 'clients')}" + (" clients a session" if first else "")
        if math.isfinite(below):
            text += (f", below its minimum of {cfg.get('min_group_size', 1)} in {short(below, 'fraction')} of sessions"
                     if first else f", below its minimum in {short(below, 'fraction')}")
        nobody = _nobody(f, t)
        if math.isfinite(nobody) and nobody >= 0.05:
            text += f", with nobody there in {short(nobody, 'fraction')}"
        parts.append(text)
    if not parts:
        return ""
    head = "IOP groups are small: " if small else "In IOP, "
    return head + "; ".join(parts) + "."


def staff_sentence(f: Facts) -> str:
    busy = []
    for role in f.roles:
        u = f.mean(f"staff_{role}_utilisation")
        if math.isfinite(u):
            busy.append(f"{short(u, 'fraction')} ({plural(role_name(role), f.mean(f'staff_{role}_headcount'))})")
    if not busy:
        return ""
    text = f"Staff are busy {listing(busy)} of their paid hours"
    unmet = [(r, f.mean(f"staff_{r}_unmet_hours") / f.years) for r in f.roles]
    unmet = [(r, h) for r, h in unmet if math.isfinite(h) and h > 0]
    if unmet:
        text += "; " + listing([f"{_hours(h)} hours a year of {role_name(r)} work found no one free" for r, h in unmet])
    return text + "."


def _hours(h: float) -> str:
    if not math.isfinite(h):
        return "–"
    return f"{h:,.0f}" if h >= 9.5 or h == 0 else f"{h:.1f}" if h >= 0.05 else "under 0.1"


# --------------------------------------------------------------------------- tables


def cell(f: Facts, triple, unit: str = "") -> dict:
    """A table cell: ``mean`` for the value and ``ci`` for its 95 % CI (empty when every replication agrees)."""
    m, lo, hi = triple
    ci = "" if not (math.isfinite(lo) and math.isfinite(hi)) or abs(hi - lo) <= 1e-9 * max(abs(m), 1.0) else \
        span(lo, hi, unit, f.currency, fmt, bare=unit not in ("currency",))
    return {"mean": fmt(m, unit, f.currency), "ci": ci}


def staffing_rows(f: Facts) -> list[dict]:
    """Per role: headcount, paid FTE, busy FTE, FTE the booked work needs, unmet hours a year,
    utilisation and its ratio rule."""
    rules = ((f.scenario.get("staff") or {}).get("ratio_rules")) or []
    rows = []
    for role in f.roles:
        p = f"staff_{role}_"

        def busy_fte(d, p=p):
            return d[p + "busy_hours"] / d[p + "paid_hours"].where(d[p + "paid_hours"] > 0) * d[p + "paid_fte"]

        ratio = []
        for rule in rules:
            if rule.get("role") != role:
                continue
            stage, cap = rule.get("stage"), rule.get("max_clients_per_staff")
            q = f"staff_ratio_{stage}_{role}_"
            text = f"{STAGE_LABELS.get(stage, stage)} at most {cap:g} clients each"
            if f.has(q + "clients_per_staff"):
                text += (f": {short(f.mean(q + 'clients_per_staff'), 'clients')} on average, within the rule on "
                         f"{short(f.mean(q + 'share_days_within_rule'), 'fraction')} of days")
            ratio.append(text)
        nothing = {"mean": "–", "ci": ""}
        rows.append({
            "role": capital(role_name(role)),
            "headcount": f"{f.mean(p + 'headcount'):.0f}" if f.has(p + "headcount") else "–",
            "paid_fte": cell(f, f.ci(p + "paid_fte")) if f.has(p + "paid_fte") else nothing,
            "busy_fte": cell(f, f.derived(busy_fte)),
            "required_fte": cell(f, f.ci(p + "required_fte")) if f.has(p + "required_fte") else nothing,
            "unmet_hours": _hours(f.mean(p + "unmet_hours") / f.years) if f.has(p + "unmet_hours") else "–",
            "utilisation": cell(f, f.ci(p + "utilisation"), "fraction") if f.has(p + "utilisation") else nothing,
            "ratio": "; ".join(ratio) or "–",
        })
    return rows


def group_rows(f: Facts) -> list[dict]:
    """Per IOP track: groups and schedule, size rule, mean group size, share below the minimum,
    sessions with nobody, sessions held, cancelled and merged a year, referral to first session."""
    rows = []
    for t, cfg in f.tracks.items():
        p = f"iop_track_{t}_"
        if p + "sessions_held" not in f.summary.index:
            continue

        def per_year(k):
            return _count(f.mean(p + k) / f.years) if f.has(p + k) else "–"

        first = [f.ci(p + "referral_to_first_session_median_days"), f.ci(p + "referral_to_first_session_p90_days")]
        rows.append({
            "track": capital(human(t)),
            "groups": f"{int(cfg.get('groups', 1))} × {schedule(cfg)}",
            "size_rule": f"{cfg.get('min_group_size', 1)}–{cfg.get('max_group_size', '')}",
            "mean_size": cell(f, f.ci(p + "group_census_mean")) if f.has(p + "group_census_mean") else {"mean": "–", "ci": ""},
            "below_min": fmt(f.mean(p + "share_sessions_below_min"), "fraction"),
            "nobody": fmt(_nobody(f, t), "fraction"),
            "held": per_year("sessions_held"),
            "cancelled": per_year("sessions_cancelled"),
            "merged": per_year("sessions_merged"),
            "first_session": " / ".join(short(x[0], "days").removesuffix(" days") for x in first) + " days"
            if any(math.isfinite(x[0]) for x in first) else "–",
        })
    return rows


def _count(x: float) -> str:
    return _hours(x)


def calibration_rows(table: pd.DataFrame) -> list[dict]:
    """The rows of ``calibration.csv`` for people: what the target is, its published value in its unit,
    the model's mean with its CI, met or missed."""
    rows = []
    for _, r in table.iterrows():
        metric = str(r.get("metric", ""))
        unit = _calibration_unit(metric)
        described = r.get("description")
        label = str(described).rstrip(".") if isinstance(described, str) and described.strip() else \
            str(r.get("id", ""))
        lo, hi = r.get("low"), r.get("high")
        if lo is not None and hi is not None and lo == lo and hi == hi:  # files written before these columns had none
            target = f"{_plain(lo, unit)} to {_plain(hi, unit)}"
        else:
            target = str(r.get("target", ""))
        rows.append({
            "id": str(r.get("id", "")),
            "label": label,
            "what": metric,
            "target": target,
            "model": _plain(r.get("model_mean"), unit),
            "model_ci": _calibration_ci(r.get("ci_low"), r.get("ci_high"), unit),
            "met": bool(r.get("met")) if r.get("met") == r.get("met") else False,
            "source": str(r.get("source", "") if r.get("source") == r.get("source") else ""),
        })
    return rows


def _calibration_ci(lo, hi, unit: str) -> str:
    """A calibration metric's CI in words; every metric is a share, a length or a count, so never below 0."""
    try:
        lo, hi = max(float(lo), 0.0), float(hi)
    except (TypeError, ValueError):
        return ""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    return f"{_plain(lo, unit)} to {_plain(hi, unit)}"


def _calibration_unit(metric: str) -> str:
    """The unit of a calibration metric, from its name: shares, days, weeks, a year's count, clients."""
    if "share" in metric or metric.startswith(("readmission", "relapse")):
        return "share"
    for suffix, unit in (("_days", "days"), ("_weeks", "weeks"), ("_per_year", "a year"), ("census_mean", "clients")):
        if suffix in metric:
            return unit
    return ""


def _plain(v, unit: str) -> str:
    """A calibration value in its unit: shares in %, days and weeks with one decimal, counts whole."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(x):
        return "–"
    if unit == "share":
        return f"{x * 100:.1f} %"
    if unit == "a year":
        return f"{x:,.0f} a year"
    return f"{x:,.1f} {unit}".strip()


def sweep_currency(folder: Path, sweep=None) -> str:
    """The currency of a sweep's base scenario (``USD`` if the base scenario cannot be read any more)."""
    try:
        from iopsim.schema.scenario import load_scenario

        man = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
        sweep_file = Path(man["sweep_file"])
        base = sweep.base if sweep is not None else yaml.safe_load(sweep_file.read_text(encoding="utf-8"))["base"]
        path = (sweep_file.parent / base) if not Path(base).is_absolute() else Path(base)
        return str(load_scenario(path).costs.currency)
    except Exception:  # noqa: BLE001 - a moved base file only loses the symbol
        return "USD"


# --------------------------------------------------------------------------- warnings and red flags


def place(field_path: str) -> str:
    """Where a warning is, in words: 'IOP day track: minimum group size'."""
    parts = field_path.split(".")
    words = {"min_group_size": "minimum group size", "max_group_size": "maximum group size",
             "facilitators": "facilitators", "clinicians": "clinicians"}
    if parts[:3] == ["stages", "iop", "tracks"] and len(parts) >= 4:
        rest = parts[4:]
        what = ""
        if rest[:1] == ["sessions"] and len(rest) > 1 and is_index(rest[1]):
            what = f"session {int(rest[1]) + 1}"
        elif rest:
            what = words.get(rest[0], human(rest[0]))
        return f"IOP {human(parts[3])} track" + (f": {what}" if what else "")
    if parts[:3] == ["stages", "iop", "availability"] and len(parts) >= 4:
        return f"IOP clients available {human(parts[3])}"
    if parts[0] == "stages" and len(parts) >= 2:
        return STAGE_LABELS.get(parts[1], human(parts[1])) + (f": {human(parts[2])}" if len(parts) > 2 else "")
    if parts[:2] == ["staff", "roles"] and len(parts) >= 3:
        return f"Staff: {plural(role_name(parts[2]), 2)}"
    if parts[0] == "intake":
        return "Intake" + (f": {words.get(parts[1], human(parts[1]))}" if len(parts) > 1 else "")
    return capital(human(" ".join(parts)))


def plain_warning(text: str) -> dict:
    """A warning of the checks ('field: message') as ``{"where", "message", "field"}``."""
    field_path, sep, message = str(text).partition(": ")
    if not sep or " " in field_path:
        return {"where": "", "message": str(text), "field": ""}
    return {"where": place(field_path), "message": capital(message), "field": field_path}


def red_flags(f: Facts) -> list[dict]:
    """The warnings of the checks, with the decisive numbers added, and waitlists still growing at the end."""
    out = []
    for w in f.warnings:
        item = plain_warning(w)
        m = re.match(r"stages\.iop\.tracks\.([^.]+)\.min_group_size$", item["field"])
        if m and f.has(f"iop_track_{m.group(1)}_group_census_mean"):
            t = m.group(1)
            extra = f"; the group averages {short(f.mean(f'iop_track_{t}_group_census_mean'), 'clients')} clients"
            nobody = _nobody(f, t)
            if math.isfinite(nobody) and nobody > 0:
                extra += f" and nobody attended {short(nobody, 'fraction')} of its sessions"
            item["message"] += extra
        out.append(item)
    if f.levels is not None and len(f.levels):
        for _, r in growing_waitlists(f.levels, f.warmup, f.horizon).iterrows():
            if r["growing"]:
                label = STAGE_LABELS.get(r["stage"], r["stage"])
                out.append({"where": label, "field": f"stages.{r['stage']}",
                            "message": f"The waitlist is still growing at the end of the run: about "
                                       f"{short(r['per_year'], 'patients')} more waiting each year "
                                       f"(average {short(r['mean_waiting'], 'patients')} in the last half)"})
    return out


# --------------------------------------------------------------------------- comparisons


def _per_year(kpi: str, unit: str) -> bool:
    """Totals over the run that read better per year (counts, hours, total money); not means, levels or unit costs."""
    if unit in ("patients", "sessions", "hours"):
        return not kpi.endswith(("_mean", "_max", "_max_first_year", "_p10", "_p90")) and "census" not in kpi
    if unit == "currency":
        return "_per_" not in kpi
    return False


def brief(value, unit: str = "", currency: str = "USD") -> str:
    """A signed difference for a sentence: '+7.3 a year'-style rounding ('+4.9 percentage points', '−$469')."""
    if value is None or not math.isfinite(float(value)):
        return "–"
    v = float(value)
    if unit in ("currency", "fraction"):
        return signed(v, unit, currency)
    sign = "+" if v > 0 else MINUS if v < 0 else "±"
    a = abs(v)
    num = f"{a:,.0f}" if a >= 100 else f"{a:.1f}" if a >= 0.95 else f"{a:.2f}"
    return f"{sign}{num} {unit}".strip()


def change_phrase(row: dict, currency: str, years: float) -> str:
    """'Cost per completed program: −$469 (−$530 to −$408; −6 %)'; totals are per year."""
    kpi = str(row["kpi"])
    label, unit = kpi_label(kpi)
    unit = str(row.get("unit") or unit or "") if isinstance(row.get("unit"), str) else unit
    scale = 1.0 / years if _per_year(kpi, unit) else 1.0
    per = " a year" if scale != 1.0 else ""
    d, lo, hi = (float(row[c]) * scale for c in ("diff", "diff_ci_low", "diff_ci_high"))
    rng = span(lo, hi, unit, currency, brief, bare=unit != "currency")
    rel = row.get("rel_change", math.nan)
    extra = f"; {rel * 100:+.0f} %".replace("-", MINUS) if rel is not None and rel == rel and math.isfinite(rel) else ""
    name = SHORT_LABELS.get(kpi) or people_label(label)
    text = f"{name}: {brief(d, unit, currency)}{per}"
    return f"{text} ({rng}{extra})" if rng else text


#: What a better (first) or worse (second) difference in a decisive KPI means, in a few words.
GIST = {
    "referral_admitted_within_14_days": ("admits more referrals within 14 days", "admits fewer referrals within 14 days"),
    "referral_lost_before_admission": ("loses fewer before admission", "loses more before admission"),
    "referral_to_admission_p90_days": ("admits them sooner", "admits them later"),
    "programs_completed": ("completes more programs", "completes fewer programs"),
    "admitted_to_treatment": ("admits more to treatment", "admits fewer to treatment"),
    "cost_per_completed_program": ("costs less per completed program", "costs more per completed program"),
    "cost_total": ("costs less in total", "costs more in total"),
    "iop_admitted_wait_p90_days": ("admits to IOP sooner", "admits to IOP later"),
    "iop_reneged": ("fewer leave the IOP waitlist", "more leave the IOP waitlist"),
}


def short_name(kpi: str) -> str:
    """A KPI's name in the answer's words: its short label, or its label for people."""
    return SHORT_LABELS.get(kpi) or people_label(kpi_label(kpi)[0])


def _gist(row: dict, better: bool, currency: str, years: float) -> str:
    kpi = str(row["kpi"])
    words = GIST.get(kpi)
    if words is None:
        name = decap(short_name(kpi))
        words = (f"does better on {name}", f"does worse on {name}")
    text = words[0 if better else 1]
    if not better:
        amount = change_phrase(row, currency, years).split(": ", 1)[-1].split(" (")[0]
        text += f" ({amount})"
    return text


def comparison_answer(verdicts: list[Verdict], facts: dict[str, Facts]) -> list[dict]:
    """Per alternative scenario: which is better on what, by how much, with CIs, and the trade-offs.

    Each item has ``lead`` (one sentence), ``better`` and ``worse`` (one phrase per
    decisive KPI), ``same`` (a sentence naming those that did not change),
    ``watch`` (red flags the alternative has and the baseline has not) and
    ``summary`` (the trade-off in one sentence).
    """
    out = []
    for v in verdicts:
        base = facts.get(v.base)
        alt = facts.get(v.scenario)
        currency = base.currency if base else "USD"
        years = base.years if base else 1.0
        better = [change_phrase(r, currency, years) for r in v.better]
        worse = [change_phrase(r, currency, years) for r in v.worse]
        weighed = len(v.better) + len(v.worse) + len(v.same)
        if v.overall == BETTER:
            lead = f"{v.scenario} is better than {v.base}: on {len(better)} of the {weighed} decisive measures, and worse on none."
        elif v.overall == WORSE:
            lead = f"{v.scenario} is worse than {v.base}: on {len(worse)} of the {weighed} decisive measures, and better on none."
        elif v.overall == "mixed":
            lead = (f"{v.scenario} is better than {v.base} on {len(better)} of the {weighed} decisive measures and "
                    f"worse on {len(worse)}: a trade-off.")
        else:
            lead = f"{v.scenario} and {v.base} do not differ significantly on any of the {weighed} decisive measures."
        same = ""
        if v.same and (v.better or v.worse):
            same = "No significant difference in " + listing(
                [decap(short_name(r["kpi"])) for r in v.same]) + "."
        unknown = ""
        if v.not_comparable:
            unknown = "Not compared: " + "; ".join(
                f"{decap(short_name(r['kpi']))} has no value in "
                + _without_value(r, v) for r in v.not_comparable) + "."
        watch = _watch(red_flags(alt) if alt else [], red_flags(base) if base else [], v.base)
        summary = ""
        if v.overall == "mixed":
            gains = listing([_gist(r, True, currency, years) for r in v.better[:4]])
            losses = listing([_gist(r, False, currency, years) for r in v.worse[:3]])
            summary = f"In short, {v.scenario} {gains}, but {losses}."
        out.append({"scenario": v.scenario, "base": v.base, "overall": v.overall, "lead": lead, "better": better,
                    "worse": worse, "same": same, "not_comparable": unknown, "watch": watch, "summary": summary})
    return out


def _without_value(r: dict, v: Verdict) -> str:
    """Which of the two scenarios has no value of a KPI that is not comparable, and why that happens."""
    base_missing = not math.isfinite(float(r.get("base_mean", math.nan)))
    alt_missing = not math.isfinite(float(r.get("mean", math.nan)))
    who = "either" if base_missing and alt_missing else (v.base if base_missing else v.scenario)
    why = (" (a percentile that not every replication reached: those who wait longest leave or are still waiting)"
           if undefined_unless_all(r["kpi"]) else "")
    return who + why


def _size(message: str) -> float:
    """The first number of a red flag's message (its size: a share, a count a year, a load), else NaN."""
    m = re.search(r"\d[\d,]*(?:\.\d+)?", message)
    return float(m.group(0).replace(",", "")) if m else math.nan


def _watch(flags: list[dict], base_flags: list[dict], base: str) -> list[str]:
    """The alternative's red flags that the baseline does not share: new ones, and ones at the same place that
    are materially worse (a first number over 1.25 times the baseline's, and at least 1: 0.4 sessions a year
    cancelled against 0.3 is noise, not news), the baseline's own then quoted."""
    at = {x["where"]: x["message"] for x in base_flags}
    out = []
    for x in flags:
        text = f"{x['where']}: {decap(x['message'])}"
        if x["where"] not in at:
            out.append(text)
            continue
        mine, theirs = _size(x["message"]), _size(at[x["where"]])
        if math.isfinite(mine) and math.isfinite(theirs) and mine > 1.25 * theirs and mine >= 1:
            out.append(f"{text} (in {base}: {decap(at[x['where']])})")
    return out


def difference_rows(judged: pd.DataFrame, kpis: list[str], base: str, currency: str) -> list[dict]:
    """Rows of the differences table: both means, the difference with its CI and relative change,
    and the judgement in words (``css`` names its colour)."""
    rows = []
    for k in kpis:
        for _, r in judged[judged["kpi"] == k].iterrows():
            unit = r["unit"] if isinstance(r["unit"], str) else ""
            rel = r["rel_change"]
            rows.append({
                "label": people_label(r["label"]),
                "scenario": r["scenario"],
                "base": fmt(r["base_mean"], unit, currency),
                "value": fmt(r["mean"], unit, currency),
                "diff": signed(r["diff"], unit, currency).replace(" percentage points", " pp"),
                "ci": span(r["diff_ci_low"], r["diff_ci_high"], unit, currency, signed).replace(" percentage points", " pp"),
                "relative": f"{rel * 100:+.0f} %".replace("-", MINUS) if math.isfinite(rel) else "–",
                "judgement": r["judgement"],
                "css": {BETTER: "better", WORSE: "worse", SAME: "same", NOT_COMPARABLE: "none"}.get(r["judgement"], "neutral"),
                "significant": "yes" if bool(r["significant"]) else "no",
                "direction": {"lower": "lower is better", "higher": "higher is better"}.get(direction(k), "neither"),
            })
    return rows


def decision_kpis(available) -> list[str]:
    have = set(available)
    return [k for k in DECISION_KPIS if k in have]


def factor_label(path: str) -> str:
    """A swept setting in words: 'stages.iop.tracks.evening.attendance.0' -> 'IOP evening track: attendance, phase 1'."""
    parts = str(path).split(".")
    index = ""
    if parts and parts[-1].isdigit():
        index = parts.pop()
    if parts[:3] == ["stages", "iop", "tracks"] and len(parts) >= 5:
        where, what = f"IOP {human(parts[3])} track", human(" ".join(parts[4:]))
    elif parts[:1] == ["stages"] and len(parts) >= 3:
        where, what = STAGE_LABELS.get(parts[1], human(parts[1])), human(", ".join(parts[2:]))
    elif parts[:2] == ["staff", "roles"] and len(parts) >= 3:
        where, what = f"Staff: {human(parts[2])}", human(", ".join(p for p in parts[3:] if not p.isdigit()))
    elif len(parts) >= 2:
        where, what = capital(human(parts[0])), human(", ".join(parts[1:]))
    else:
        where, what = capital(human(parts[0] if parts else path)), ""
    if index:
        what = f"{what}, {'phase' if 'attendance' in what else 'item'} {int(index) + 1}"
    return f"{where}: {what}" if what else where


def plus_minus(mean, half, unit: str = "", currency: str = "USD", sign: bool = False) -> str:
    """A mean and its CI half-width, rounded together, for narrow tables: '639 ± 9', '76.4 ± 0.8 %',
    '$6,793 ± 160', '4.0 ± 1.2 days'; ``sign`` writes '+' before a positive mean (a difference)."""
    try:
        m, h = float(mean), float(half)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(m):
        return "–"
    scale = 100.0 if unit == "fraction" else 1.0
    m, h = m * scale, h * scale
    if math.isfinite(h) and h <= 1e-9 * max(abs(m), 1.0):
        h = 0.0  # the same in every replication (up to rounding)
    if math.isfinite(h) and h > 0:
        e = math.floor(math.log10(h))
        decimals = min(max(-e + (1 if h / 10 ** e < 3 else 0), 0), 3)
    else:
        a = abs(m)
        decimals = 0 if a >= 100 or unit == "currency" or a == round(a) else 1 if a >= 10 else 2
    if unit == "currency":
        decimals = 0
    text = f"{abs(m):,.{decimals}f}"
    lead = (MINUS if m < 0 and float(text.replace(",", "")) != 0 else "+" if sign and m > 0 else "")
    if unit == "currency":
        text = symbol(currency) + text
    out = lead + text
    if math.isfinite(h) and h > 0:
        out += f" ± {h:,.{decimals}f}"
    suffix = {"fraction": " pp" if sign else " %", "days": " days"}.get(unit, "")
    return out + suffix
