"""The iopsim web app: describe a site in forms, run it, compare scenarios, size it with the planner.

``iopsim app`` serves this script with Streamlit.  It only lays out the pages:
the drafts, checks and background jobs are :mod:`iopsim.app.logic`, the
simulations are the public API, and everything a result page shows is read
from the run folder with :mod:`iopsim.outputs.views`, as the report is.
Each browser tab is a session of its own (``st.session_state``): its draft,
its jobs and its run folders are its own.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import streamlit as st

from iopsim.app import logic
from iopsim.outputs import views
from iopsim.outputs.plan_report import target_text

PAGES = ("Describe the site", "Run", "Compare", "Plan")
#: Run folders go here, relative to the folder the app was started in, as from the CLI.
OUTPUTS = Path("outputs")
DAY_NAMES = {"mon": "Mon", "tue": "Tue", "wed": "Wed", "thu": "Thu", "fri": "Fri", "sat": "Sat", "sun": "Sun"}
SITE = "The site described on the first page"
POLL_SECONDS = 0.5

#: Form labels where the field's name in words is not clear enough.
LABELS = {
    "name": "Name of the scenario",
    "horizon_days": "Run length (days)",
    "warmup_days": "Warm-up (days left out of the results)",
    "replications": "Replications (default for runs)",
    "referrals_per_week": "Referrals per week",
    "share": "Share of referrals",
    "capacity": "Places (beds or slots)",
    "groups": "Groups (parallel, at the same times)",
    "min_group_size": "Minimum group size",
    "max_group_size": "Maximum group size (seats)",
    "admission": "Admission",
    "start_hour": "Starts at (hour; 8.5 is 08:30)",
    "end_hour": "Ends at (hour; 17 is 17:00)",
    "hours": "Length (hours)",
    "days": "Days",
    "headcount": "Headcount (people)",
    "count": "Facilitators per group",
    "hourly_wage": "Hourly wage",
    "evening_differential": "Evening pay extra (share: 0.10 is 10 %)",
    "weekend_differential": "Weekend pay extra (share)",
    "fixed_overhead_per_day": "Fixed overhead per day",
    "cost_per_patient_day": "Cost per patient-day",
    "cost_per_assessment": "Cost per assessment",
    "currency": "Currency",
}


def md(text: str) -> str:
    """Plain text for st.markdown: '$' would start a formula, '*' and '_' emphasis."""
    return re.sub(r"([\\`*_{}\[\]<>#$|~])", r"\\\1", str(text))


def label_of(path: str) -> str:
    key = path.rsplit(".", 1)[-1]
    return LABELS.get(key, key.replace("_", " ").capitalize())


# --------------------------------------------------------------------------- session state


def state() -> dict:
    ss = st.session_state
    if "jobs" not in ss:
        ss["jobs"] = {}
        ss["history"] = {"run": [], "compare": [], "plan": []}
        ss["uploads"] = {}
    if "draft" not in ss:
        shipped = logic.shipped_scenarios()
        if not shipped:
            st.error("No scenarios found: start the app from the iopsim repository folder (the one holding "
                     "scenarios/), or upload a scenario file below.")
            ss["draft"] = None
        else:
            first = shipped.get("baseline") or next(iter(shipped.values()))
            ss["draft"] = logic.Draft(logic.file_source(first))
    return ss


def draft() -> logic.Draft | None:
    return st.session_state.get("draft")


def jobs() -> dict:
    return st.session_state["jobs"]


@st.cache_data(show_spinner=False, max_entries=64)
def run_view(folder: str) -> views.RunView:
    return views.run_view(folder)


@st.cache_data(show_spinner=False, max_entries=32)
def comparison_view(folder: str) -> views.ComparisonView:
    return views.comparison_view(folder)


@st.cache_data(show_spinner=False, max_entries=32)
def plan_view(folder: str) -> views.PlanView:
    return views.plan_view(folder)


@st.cache_data(show_spinner=False, max_entries=4)
def zipped(folder: str) -> bytes:
    return logic.zip_folder(Path(folder))


# --------------------------------------------------------------------------- forms


class Form:
    """Widgets over a dotted-path document; a placeholder under each widget for its messages.

    Every widget's key carries the document's generation, so when the structure changes (a team
    added, another scenario loaded) all widgets start again from the document's values.
    """

    def __init__(self, prefix: str, getter, setter, generation: int, spec=logic.field_spec):
        self.prefix, self.get, self.set, self.generation, self.spec = prefix, getter, setter, generation, spec
        self.slots: dict[str, object] = {}
        self.groups: dict[str, object] = {}
        self.later: list = []  # changes of structure, made once every widget has given its value

    def key(self, path: str) -> str:
        return f"{self.prefix}.{self.generation}:{path}"

    def sync(self) -> None:
        """Take the values the widgets hold now into the document before anything is drawn, so that
        what is checked first (and decides which parts of the form open) is what the user sees."""
        head = self.key("")
        for key, value in list(st.session_state.items()):
            path = key[len(head):] if isinstance(key, str) and key.startswith(head) else None
            if not path or ":" in path or isinstance(value, bool):
                continue  # a button, or a field that is not a scenario value (``...:remove``)
            if self.get(path) is None and not isinstance(value, (int, float)):
                continue
            old = self.get(path)
            if isinstance(value, list):
                value = sorted(value, key=list(DAY_NAMES).index) if all(v in DAY_NAMES for v in value) else value
            elif isinstance(old, int) and not isinstance(old, bool) and isinstance(value, float) and value.is_integer():
                value = int(value)
            self._put(path, old, value)

    def button(self, label: str, path: str, action, *args, **kw) -> None:
        """A button that changes the document's structure (adds a team, say) after the whole form is read."""
        if st.button(label, key=self.key(path), **kw):
            self.later.append((action, args))

    def apply_later(self) -> None:
        if self.later:
            for action, args in self.later:
                action(*args)
            st.rerun()

    def _help(self, path: str, extra: str = "") -> str:
        spec = self.spec(path) if self.spec else None
        return " ".join(x for x in (spec.help() if spec else "", extra) if x)

    def _slot(self, path: str) -> None:
        self.slots[path] = st.empty()

    def group(self, path: str) -> None:
        """A place for messages about a whole part (a track, a team)."""
        self.groups[path] = st.empty()

    def number(self, path: str, label: str | None = None, *, integer: bool | None = None, step: float | None = None,
               help: str = "") -> None:
        value = self.get(path)
        spec = self.spec(path) if self.spec else None
        if integer is None:
            integer = (spec.kind == "int") if spec and spec.kind in ("int", "float") else isinstance(value, int)
        label = label or label_of(path)
        if integer:
            v = st.number_input(label, value=None if value is None else int(value), step=1, format="%d",
                                key=self.key(path), help=self._help(path, help))
        else:
            decimals = next((n for n in (2, 3, 4) if not isinstance(value, float) or round(value, n) == value), 4)
            v = st.number_input(label, value=None if value is None else float(value), step=step or _step(value),
                                format=f"%.{decimals}f", key=self.key(path), help=self._help(path, help))
        self._slot(path)
        self._put(path, value, None if v is None else int(v) if integer else float(v))

    def days(self, path: str, label: str | None = None) -> None:
        value = list(self.get(path) or [])
        v = st.multiselect(label or label_of(path), list(DAY_NAMES), default=[d for d in value if d in DAY_NAMES],
                           format_func=DAY_NAMES.get, key=self.key(path), help=self._help(path))
        self._slot(path)
        self._put(path, value, sorted(v, key=list(DAY_NAMES).index))

    def choice(self, path: str, options=None, label: str | None = None) -> None:
        value = self.get(path)
        spec = self.spec(path) if self.spec else None
        options = list(options or (spec.choices if spec else []) or [value])
        if value not in options:
            options.append(value)
        v = st.selectbox(label or label_of(path), options, index=options.index(value), key=self.key(path),
                         help=self._help(path))
        self._slot(path)
        self._put(path, value, v)

    def toggle(self, path: str, label: str | None = None) -> None:
        value = bool(self.get(path))
        v = st.checkbox(label or label_of(path), value=value, key=self.key(path), help=self._help(path))
        self._slot(path)
        self._put(path, value, bool(v))

    def text(self, path: str, label: str | None = None) -> None:
        value = self.get(path)
        v = st.text_input(label or label_of(path), value="" if value is None else str(value), key=self.key(path),
                          help=self._help(path))
        self._slot(path)
        self._put(path, value, v)

    def _put(self, path: str, old, new) -> None:
        if new != old or type(new) is not type(old):
            if not (isinstance(old, (int, float)) and isinstance(new, (int, float)) and old == new):
                self.set(path, new)

    def show(self, problems, changed=()) -> list:
        """Put each problem under its field (or part); returns those that belong nowhere."""
        placed, general = logic.place(problems, self.slots, self.groups, changed)
        for path, items in placed.items():
            slot = self.slots.get(path) or self.groups.get(path)
            with slot.container():
                for pr in items:
                    (st.error if pr.level == "error" else st.warning)(md(pr.text))
        return general


def _step(value) -> float:
    if isinstance(value, (int, float)) and 0 <= abs(value) <= 1:
        return 0.01
    return 0.5 if isinstance(value, (int, float)) and abs(value) < 100 else 1.0


# --------------------------------------------------------------------------- Describe the site


def _load_shipped(name: str) -> None:
    shipped = logic.shipped_scenarios()
    if name in shipped:
        st.session_state["draft"] = logic.Draft(logic.file_source(shipped[name]))


def _take_upload(up) -> None:
    """A newly uploaded scenario file becomes the draft (or, if it does not load, its one-line error shows)."""
    if up is None or st.session_state.get("upload_seen") == up.file_id:
        return
    st.session_state["upload_seen"] = up.file_id
    try:
        source = logic.upload_source(up.name, up.getvalue(), OUTPUTS, logic.shipped_scenarios().values())
        new = logic.Draft(source)
    except logic.IopsimError as exc:
        st.session_state["upload_error"] = str(exc)
        return
    st.session_state.pop("upload_error", None)
    st.session_state["draft"] = new
    st.session_state["uploads"][source.label] = source


def describe_page() -> None:
    st.title("Describe the site")
    st.markdown("Start from a shipped scenario or upload a scenario file, then change what differs at your "
                "site: referrals, places, IOP groups, staff and costs. Every change is checked as you make it, "
                "with the messages `iopsim validate` prints. Then go to **Run**.")
    shipped = logic.shipped_scenarios()
    d = draft()
    c1, c2 = st.columns(2)
    with c1:
        names = list(shipped)
        current = d.source.path.stem if d is not None and not d.source.uploaded else None
        pick = st.selectbox("Start from a shipped scenario", names, index=names.index(current) if current in names else 0,
                            key="start_from", help="The scenario files in scenarios/. Starting again discards "
                                                   "the changes made here (download them first).")
        if st.button("Start from this scenario", key="load_shipped", disabled=not names):
            _load_shipped(pick)
            st.rerun()
    with c2:
        up = st.file_uploader("…or upload a scenario file (YAML)", type=["yaml", "yml"], key="upload")
        _take_upload(up)
        if st.session_state.get("upload_error"):
            st.error(md(st.session_state["upload_error"]))
    d = draft()
    if d is None:
        return
    top = st.empty()
    form = Form(f"f{d.token}", d.get, d.set, d.generation)
    form.sync()
    d.check()  # the problems decide which parts of the form open

    st.header("The site and the run")
    a, b, c = st.columns(3)
    with a:
        form.text("name")
    with b:
        form.number("horizon_days")
    with c:
        form.number("warmup_days")

    st.header("Referrals")
    st.caption("How many people are referred each week, and where they come from. Each source's share of "
               "referrals, and where intake places its referrals, are shares from 0 to 1 that sum to 1.")
    form.group("referrals")
    a, b = st.columns([2, 1])
    with a:
        form.number("referrals.referrals_per_week")
    with b:
        form.number("referrals.transport_barrier", "Travel to the site is a barrier for (share)")
    sources = d.get("referrals.sources") or {}
    form.group("referrals.sources")
    cols = st.columns(max(len(sources), 1))
    for col, (src, cfg) in zip(cols, sources.items()):
        with col:
            base = f"referrals.sources.{src}"
            form.number(f"{base}.share", f"{src.replace('_', ' ').capitalize()}: share")
            with st.expander("Placed by intake in", expanded=d.problems_under(f"{base}.placement")):
                form.group(f"{base}.placement")
                for target in cfg.get("placement") or {}:
                    form.number(f"{base}.placement.{target}", target.replace("_", " "))
            if cfg.get("payers"):
                with st.expander("Paid for by", expanded=d.problems_under(f"{base}.payers")):
                    form.group(f"{base}.payers")
                    for payer in cfg["payers"]:
                        form.number(f"{base}.payers.{payer}", payer.replace("_", " "))

    st.header("Places per level of care")
    stages = d.get("stages") or {}
    placed = [n for n, s in stages.items() if isinstance(s, dict) and not s.get("tracks")]
    cols = st.columns(max(len(placed), 1))
    for col, name in zip(cols, placed):
        with col:
            form.number(f"stages.{name}.capacity", f"{_stage(name)}: places",
                        help="Empty: as many places as needed (no waitlist).")
    iop = stages.get("iop") if isinstance(stages.get("iop"), dict) else None
    if iop and iop.get("tracks"):
        _iop_section(form, d, iop)
    _staff_section(form, d)
    _costs_section(form, d, stages)

    form.apply_later()
    sc, problems = d.check()
    general = form.show(problems, d.overrides())
    with top.container():
        _draft_summary(d, sc, problems, general)


def _stage(name: str) -> str:
    return {"residential": "Residential", "php": "PHP", "iop": "IOP", "aftercare": "Aftercare"}.get(name, name)


def _iop_section(form: Form, d: logic.Draft, iop: dict) -> None:
    st.header("IOP groups")
    st.caption("The intensive outpatient program runs as group therapy: tracks of parallel groups meeting on a "
               "weekly calendar. A track's seats are its groups times the maximum group size.")
    form.group("stages.iop")
    avail = iop.get("availability") or {}
    with st.expander("Who can attend when (shares of IOP clients, summing to 1)",
                     expanded=d.problems_under("stages.iop.availability")):
        form.group("stages.iop.availability")
        cols = st.columns(max(len(avail), 1))
        for col, cls in zip(cols, avail):
            with col:
                form.number(f"stages.iop.availability.{cls}", cls.replace("_", " "))
    barrier = d.get("stages.iop.transport_barrier")
    shares = [d.get("referrals.transport_barrier") or 0] + [s.get("transport_barrier") or 0 for s in
                                                            (d.get("referrals.sources") or {}).values()]
    if barrier is not None or any(x > 0 for x in shares):  # it matters only once someone has the barrier
        a, b = st.columns(2)
        form.group("stages.iop.transport_barrier")
        with a:
            form.choice("stages.iop.transport_barrier.effect", label="Clients with a transport barrier, in in-person "
                        "groups")
        with b:
            if (d.get("stages.iop.transport_barrier.effect") or "attendance") == "attendance":
                form.number("stages.iop.transport_barrier.attendance_factor", "… attend this share as often")
    for tname, track in iop["tracks"].items():
        base = f"stages.iop.tracks.{tname}"
        with st.expander(f"Track: {tname.replace('_', ' ')}", expanded=True):
            form.group(base)
            a, b, c, e = st.columns(4)
            with a:
                form.number(f"{base}.groups")
            with b:
                form.number(f"{base}.min_group_size")
            with c:
                form.number(f"{base}.max_group_size")
            with e:
                form.choice(f"{base}.admission")
            if "mode" in track:
                a, b, c = st.columns([1, 1, 2])
                with a:
                    form.choice(f"{base}.mode", label="Meets")
                with b:
                    form.number(f"{base}.cost_per_client_day", "Cost per client-day",
                                help="Empty: the IOP's cost per patient-day.")
                with c:
                    if track.get("mode") == "virtual" or track.get("remote_facilitators"):
                        st.write("")
                        form.toggle(f"{base}.remote_facilitators", "Facilitators may work from home")
            for i, _s in enumerate(track.get("sessions") or []):
                p = f"{base}.sessions.{i}"
                form.group(p)
                a, b, c, e = st.columns([3, 2, 2, 1])
                with a:
                    form.days(f"{p}.days", f"Session {i + 1}: days")
                with b:
                    form.number(f"{p}.start_hour", step=0.5)
                with c:
                    form.number(f"{p}.hours", step=0.5)
                with e:
                    st.write("")
                    form.button("Remove", f"{p}:remove", d.remove_item, f"{base}.sessions", i,
                                disabled=len(track["sessions"]) < 2, help="Remove this session time")
            form.button("Add a session time", f"{base}:add-session", d.add_item, f"{base}.sessions")
            for i, f in enumerate(track.get("facilitators") or []):
                form.number(f"{base}.facilitators.{i}.count",
                            f"{str(f.get('role', 'staff')).replace('_', ' ').capitalize()}s running each group")
    a, b = st.columns([2, 1])
    with a:
        new = st.text_input("Add a track (a copy of the first, under a new name)", key=form.key("iop:new-track"),
                            placeholder="e.g. weekend")
    with b:
        st.write("")
        form.button("Add the track", "iop:add-track", d.copy_entry, "stages.iop.tracks", next(iter(iop["tracks"])),
                    re.sub(r"\W+", "_", new.strip()).strip("_"), disabled=not new.strip())


def _staff_section(form: Form, d: logic.Draft) -> None:
    roles = (d.get("staff") or {}).get("roles") or {}
    if not roles:
        return
    st.header("Staff")
    st.caption("Each role has teams: a headcount of people who all work the same weekly shifts.")
    form.group("staff")
    for role, cfg in roles.items():
        base = f"staff.roles.{role}"
        people = sum(int(t.get("headcount", 0)) for t in cfg.get("teams") or [])
        with st.expander(f"{role.replace('_', ' ').capitalize()}: {people} in {len(cfg.get('teams') or [])} "
                         f"team{'s' if len(cfg.get('teams') or []) != 1 else ''}",
                         expanded=role == "counselor" or d.problems_under(base)):
            form.group(base)
            a, b, c = st.columns(3)
            with a:
                form.number(f"{base}.hourly_wage")
            with b:
                form.number(f"{base}.evening_differential")
            with c:
                form.number(f"{base}.weekend_differential")
            for i, team in enumerate(cfg.get("teams") or []):
                tp = f"{base}.teams.{i}"
                st.markdown(f"**Team {i + 1}**")
                form.group(tp)
                a, b = st.columns([1, 3])
                with a:
                    form.number(f"{tp}.headcount")
                    if "remote" in team:
                        form.toggle(f"{tp}.remote", "Works from home")
                    form.button("Remove team", f"{tp}:remove", d.remove_item, f"{base}.teams", i,
                                disabled=len(cfg["teams"]) < 2)
                with b:
                    for j, _sh in enumerate(team.get("shifts") or []):
                        sp = f"{tp}.shifts.{j}"
                        form.group(sp)
                        x, y, z = st.columns([3, 2, 2])
                        with x:
                            form.days(f"{sp}.days", f"Shift {j + 1}: days")
                        with y:
                            form.number(f"{sp}.start_hour", step=0.5)
                        with z:
                            form.number(f"{sp}.end_hour", step=0.5)
                    form.button("Add a shift", f"{tp}:add-shift", d.add_item, f"{tp}.shifts")
            form.button("Add a team (a copy of the last)", f"{base}:add-team", d.add_item, f"{base}.teams")


def _costs_section(form: Form, d: logic.Draft, stages: dict) -> None:
    st.header("Costs")
    currency = (d.get("costs") or {}).get("currency", "USD")
    st.caption(f"Amounts in {currency}. Staff are paid through their rosters (wages above); these are the "
               "other costs.")
    form.group("costs")
    a, b = st.columns(2)
    with a:
        form.number("costs.fixed_overhead_per_day")
    with b:
        form.text("costs.currency")
    names = [n for n, s in stages.items() if isinstance(s, dict)]
    cols = st.columns(max(len(names), 1))
    for col, name in zip(cols, names):
        with col:
            form.number(f"stages.{name}.cost_per_patient_day", f"{_stage(name)}: cost per patient-day")
    if isinstance(d.get("intake"), dict):
        form.number("intake.cost_per_assessment")
    payers = d.get("payers") or {}
    if payers:
        st.subheader("Payers")
        st.caption(f"What each payer pays per billable unit ({currency}), and the shares denied and collected. "
                   "Each referral source's payer mix is under Referrals.")
        form.group("payers")
        for name, cfg in payers.items():
            base = f"payers.{name}"
            with st.expander(name.replace("_", " ").capitalize(), expanded=d.problems_under(base)):
                form.group(base)
                rates = list((cfg.get("rates") or {}).items())
                for i in range(0, len(rates), 4):
                    cols = st.columns(4)
                    for col, (unit, _rate) in zip(cols, rates[i:i + 4]):
                        with col:
                            form.number(f"{base}.rates.{unit}", unit.replace("_", " "))
                a, b = st.columns(2)
                with a:
                    form.number(f"{base}.denial_rate", "Denied (share)")
                with b:
                    form.number(f"{base}.collection_rate", "Collected (share of the rest)")


def _draft_summary(d: logic.Draft, sc, problems, general) -> None:
    changes = d.overrides()
    errors = [p for p in problems if p.level == "error"]
    head = f"**{md(d.name)}**, from `{d.source.label}`: "
    head += f"{len(changes)} change{'s' if len(changes) != 1 else ''}" if changes else "no changes yet"
    st.markdown(head)
    warnings = [p for p in problems if p.level != "error"]
    if errors:
        st.error(f"{len(errors)} problem{'s' if len(errors) > 1 else ''} to fix before it can run "
                 "(shown next to their fields below)" + (":" if general else "."))
    elif warnings:
        st.warning(f"It can run, with {len(warnings)} warning{'s' if len(warnings) > 1 else ''} about the plan "
                   "(shown next to their fields below).")
    for pr in general:
        (st.error if pr.level == "error" else st.warning)(md(pr.text))
    a, b, c = st.columns(3)
    with a:
        st.download_button("Download the scenario (YAML)", key="download_yaml",
                           data=d.yaml_text(),
                           file_name=f"{logic.safe_name(d.name, 'scenario')}.yaml", mime="application/x-yaml",
                           help="The scenario file with your changes; comments about sources are kept on the "
                                "values you did not change.")
    with b:
        st.button("Undo all changes", key="undo", on_click=d.reset, disabled=not changes)
    if changes:
        with c.popover("What changed") if hasattr(c, "popover") else c.expander("What changed"):
            st.code("\n".join(d.set_strings()), language=None)


# --------------------------------------------------------------------------- jobs


@st.fragment(run_every=POLL_SECONDS)
def _poll(kind: str) -> None:
    """Progress of a running job, redrawn every half second; the whole page reruns once it has finished."""
    job = jobs().get(kind)
    if job is None or not job.running:
        st.rerun()
    unit = {"run": "replications", "compare": "replications", "plan": "plans decided"}[kind]
    what = f" ({job.phase})" if job.phase else ""
    text = f"{job.title}{what}: {job.done} of {job.total} {unit}" if job.total else f"{job.title}: starting…"
    st.progress(job.fraction, text=text)
    st.caption(f"{job.elapsed:.0f} s. The page stays usable; results appear here when the run is done.")
    if st.button("Stop", key=f"stop-{kind}"):
        job.cancel()


def job_status(kind: str) -> None:
    """Progress while a job runs; its error, or the note that it was stopped, once it is over."""
    job = jobs().get(kind)
    if job is None:
        return
    if job.running:
        _poll(kind)
        return
    if job.state == "failed":
        st.error(md(job.error or "failed"))
    elif job.state == "cancelled":
        st.info("Stopped before the end; nothing was written.")
    elif job.state == "done" and job.folder is not None:
        history = st.session_state["history"][kind]
        if str(job.folder) not in history:
            history.append(str(job.folder))


def _start(kind: str, starter) -> None:
    """Start a job of this tab (one of each kind at a time), then draw the page again with its button off."""
    current = jobs().get(kind)
    if current is not None and current.running:
        return
    try:
        jobs()[kind] = starter()
    except logic.IopsimError as exc:
        st.session_state[f"{kind}_error"] = str(exc)
    else:
        st.session_state.pop(f"{kind}_error", None)
    st.rerun()


def _shown(kind: str) -> str | None:
    """The folder a results page shows: the one picked among this tab's results, else the latest."""
    history = st.session_state["history"][kind]
    if not history:
        return None
    if len(history) > 1:
        # a new result makes a new list, so the latest is shown first again
        return st.selectbox("Results of this session (latest first)", list(reversed(history)),
                            key=f"{kind}-pick-{len(history)}", format_func=lambda p: Path(p).name)
    return history[-1]


def downloads(folder: Path, report: Path | None, what: str) -> None:
    a, b = st.columns(2)
    with a:
        if report is not None:
            st.download_button("Download the report (report.html)", data=report.read_bytes(),
                               file_name=f"{folder.name}-report.html", mime="text/html", key=f"{what}-report",
                               type="primary")
    with b:
        st.download_button(f"Download the {what} folder (zip)", data=zipped(str(folder)), file_name=f"{folder.name}.zip",
                           mime="application/zip", key=f"{what}-zip")
    st.caption(f"{what.capitalize()} folder: `{logic.display_path(folder)}`")


def kpi_tables(groups, expanded: str | None = "Program") -> None:
    """One table per group of KPIs, each in an expander (``expanded=None``: under headings, for use
    inside an expander, which cannot hold another)."""
    for title, rows in groups:
        table = {"Measure": [r["label"] for r in rows], "Mean": [r["mean"] for r in rows],
                 "95 % CI": [r["ci"] for r in rows], "Unit": [r["unit"] for r in rows]}
        if expanded is None:
            st.markdown(f"**{md(title)}**")
            st.table(table)
            continue
        with st.expander(f"{title} ({len(rows)})", expanded=title == expanded):
            st.table(table)


def figures(items, columns: int = 2) -> None:
    for i in range(0, len(items), columns):
        cols = st.columns(columns)
        for col, (caption, path) in zip(cols, items[i:i + columns]):
            with col:
                st.image(str(path), caption=caption)


# --------------------------------------------------------------------------- Run


def run_page() -> None:
    st.title("Run")
    d = draft()
    if d is None:
        st.info("Describe a site first.")
        return
    sc, problems = d.check()
    st.markdown(f"Simulates **{md(d.name)}** (from `{d.source.label}`"
                + (f", with {len(d.overrides())} changes" if d.overrides() else "") + ") and writes a run folder "
                "under `outputs/`, exactly as `iopsim run` does.")
    if sc is None:
        st.error("The scenario cannot run yet; fix these on **Describe the site**:")
        for pr in problems:
            st.error(md(pr.text))
        return
    if problems:
        with st.expander(f"{len(problems)} warning{'s' if len(problems) > 1 else ''} about the plan, before it runs "
                         "(as `iopsim validate` gives them)", expanded=not st.session_state["history"]["run"]):
            for pr in problems:
                st.warning(md(pr.text))
    running = jobs().get("run") is not None and jobs()["run"].running
    a, b, c = st.columns(3)
    with a:
        reps = st.number_input("Replications", min_value=1, value=int(sc.replications), step=1, key="run-reps",
                               help="Independent repetitions of the run length; more give narrower 95 % confidence "
                                    "intervals.")
    with b:
        workers = st.number_input("Worker processes", min_value=1, value=_default_workers(), step=1, key="run-jobs",
                                  help="Replications run in parallel in this many processes; results are the same.")
    with c:
        st.write("")
        if st.button("Run", type="primary", key="run-start", disabled=running):
            _start("run", lambda: logic.start_run(d, int(reps), OUTPUTS, int(workers)))
    with st.expander("The same run from the command line"):
        sets = " ".join(f"--set '{s}'" for s in d.set_strings())
        st.code(f"iopsim run {logic.display_path(d.source.path)} -n {int(reps)} {sets}".strip(), language="bash")
    if st.session_state.get("run_error"):
        st.error(md(st.session_state["run_error"]))
    job_status("run")
    folder = _shown("run")
    if folder:
        show_run(run_view(folder))


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def show_run(v: views.RunView) -> None:
    st.header(f"{v.name}: the answer")
    st.caption(f"{v.replications} replications; every range in brackets is a 95 % confidence interval.")
    for s in v.answer:
        st.markdown(md(s))
    if v.flags:
        st.subheader("Warnings about the plan")
        for f in v.flags:
            st.warning(md(f"{f['where']}: {f['message']}" if f.get("where") else f["message"]))
    downloads(v.folder, v.report, "run")
    st.subheader("Results (mean and 95 % confidence interval)")
    kpi_tables(v.groups)
    st.subheader("Figures")
    figures(v.figures)


# --------------------------------------------------------------------------- Compare


def compare_page() -> None:
    st.title("Compare")
    st.markdown("Two or more scenarios on the same simulated patients (common random numbers), as `iopsim compare` "
                "does: the first is the baseline, and each other is judged better or worse on the decisive measures.")
    d = draft()
    shipped = logic.shipped_scenarios()
    uploads = st.session_state["uploads"]
    options = ([SITE] if d is not None else []) + list(shipped) + list(uploads)
    default = [o for o in ("evening", "weekend") if o in options]
    if d is not None and d.overrides():
        default = [d.source.path.stem, SITE] if d.source.path.stem in shipped else [SITE, *default[:1]]

    def label(o: str) -> str:
        return f"{o}: {d.name} (as described, with its changes)" if o == SITE and d is not None else o

    picked = st.multiselect("Scenarios (the first is the baseline)", options, default=default, format_func=label,
                            key="cmp-pick")
    more = st.file_uploader("Add scenario files (YAML)", type=["yaml", "yml"], accept_multiple_files=True, key="cmp-up")
    for up in more or []:
        if st.session_state.get(f"cmp-seen-{up.file_id}"):
            continue
        st.session_state[f"cmp-seen-{up.file_id}"] = True
        try:
            source = logic.upload_source(up.name, up.getvalue(), OUTPUTS, shipped.values())
            logic.Draft(source)  # it must load: its one-line error shows here if not
            uploads[source.label] = source
            st.rerun()
        except logic.IopsimError as exc:
            st.error(md(str(exc)))
    a, b, c, e = st.columns(4)
    with a:
        reps = st.number_input("Replications", min_value=2, value=10, step=1, key="cmp-reps")
    with b:
        horizon = st.number_input("Run length for all (days)", min_value=1, value=None, step=1, key="cmp-horizon",
                                  help="Empty: each scenario's own run length.")
    with c:
        workers = st.number_input("Worker processes", min_value=1, value=_default_workers(), step=1, key="cmp-jobs")
    running = jobs().get("compare") is not None and jobs()["compare"].running
    with e:
        st.write("")
        if st.button("Compare", type="primary", key="cmp-start", disabled=running or len(picked) < 2):
            _start("compare", lambda: logic.start_compare(_candidates(picked, d, shipped, uploads), int(reps), OUTPUTS,
                                                          int(workers), {"horizon_days": int(horizon)} if horizon else None))
    if len(picked) < 2:
        st.caption("Choose at least two scenarios.")
    if st.session_state.get("compare_error"):
        st.error(md(st.session_state["compare_error"]))
    job_status("compare")
    folder = _shown("compare")
    if folder:
        show_comparison(comparison_view(folder))


def _candidates(picked, d, shipped, uploads) -> list[logic.Candidate]:
    out = []
    for o in picked:
        if o == SITE:
            name = d.name
            if d.overrides() and name == d.base.get("name"):
                name = f"{name}-edited"  # beside the file it came from, the edited site needs a name of its own
            out.append(logic.Candidate(name, d.source.path, d.overrides()))
        elif o in shipped:
            out.append(logic.Candidate(logic.Draft(logic.file_source(shipped[o])).name, shipped[o]))
        else:
            out.append(logic.Candidate(logic.Draft(uploads[o]).name, uploads[o].path))
    return out


def show_comparison(v: views.ComparisonView) -> None:
    st.header("The verdict")
    st.caption(f"{v.replications} replications of each scenario on common random numbers; ranges are 95 % "
               "confidence intervals" + (", Bonferroni-adjusted" if len(v.names) > 2 else "") + ".")
    for item in v.verdicts:
        st.markdown(f"**{md(item['lead'])}**")
        for head, lines in (("Better", item["better"]), ("Worse", item["worse"]),
                            (f"Watch out in {item['scenario']}", item["watch"])):
            if lines:
                st.markdown(f"{md(head)}:\n" + "\n".join(f"- {md(x)}" for x in lines))
        for line in (item["same"], item["not_comparable"], item["summary"]):
            if line:
                st.markdown(md(line))
    downloads(v.folder, v.report, "comparison")
    figures([f for f in v.figures if f[1].name == "forest.png"], columns=1)
    if v.differences:
        st.subheader("Differences from the baseline")
        st.table({"Measure": [r["label"] for r in v.differences], "Scenario": [r["scenario"] for r in v.differences],
                  v.names[0]: [r["base"] for r in v.differences], "Value": [r["value"] for r in v.differences],
                  "Difference (95 % CI)": [f"{r['diff']} ({r['ci']})" if r["ci"] else r["diff"] for r in v.differences],
                  "Judgement": [r["judgement"] for r in v.differences]})
    figures([f for f in v.figures if f[1].name != "forest.png"])
    for name, run in v.runs.items():
        with st.expander(f"{name}: its own answer and results"):
            for s in run.answer:
                st.markdown(md(s))
            kpi_tables(run.groups, expanded=None)


# --------------------------------------------------------------------------- Plan


def _plan_state() -> dict:
    ss = st.session_state
    if "plan_doc" not in ss:
        plans = logic.shipped_plans()
        ss["plan_file"] = plans.get("new-site") or next(iter(plans.values()), None)
        ss["plan_doc"] = _demo_budget(logic.load_plan_file(ss["plan_file"])) if ss["plan_file"] else None
        ss["plan_gen"] = 0
    return ss


def _demo_budget(doc: dict) -> dict:
    """A plan file's budget cut to a demonstration's (3 replications first, at most 10): a few minutes."""
    doc = copy.deepcopy(doc)
    reps = doc.setdefault("replications", {})
    reps["first"] = min(int(reps.get("first", 5)), 3)
    reps["max"] = min(int(reps.get("max", 40)), 10)
    return doc


def plan_page() -> None:
    st.title("Plan")
    st.markdown("The cheapest plan of staff, groups and places that meets your service targets, as `iopsim plan` "
                "finds it: every plan in the ranges below is simulated on the same patients, with more replications "
                "only where a plan is close to a target.")
    ss = _plan_state()
    plans = logic.shipped_plans()
    if ss["plan_doc"] is None:
        st.info("No plan files found (scenarios/plans/).")
        return
    a, b = st.columns(2)
    with a:
        names = list(plans)
        pick = st.selectbox("Start from a plan file", names, index=names.index(Path(ss["plan_file"]).stem),
                            key="plan-file")
        if st.button("Start from this plan", key="plan-load"):
            ss["plan_file"] = plans[pick]
            ss["plan_doc"] = _demo_budget(logic.load_plan_file(plans[pick]))
            ss["plan_own_set"] = dict(ss["plan_doc"].get("set") or {})
            ss["plan_gen"] += 1
            st.rerun()
    doc = ss["plan_doc"]
    d = draft()
    base_file = (Path(ss["plan_file"]).parent / str(doc.get("base", ""))).resolve()
    with b:
        bases = ([SITE] if d is not None else []) + [f"the plan file's base ({logic.display_path(base_file)})"]
        base_pick = st.radio("Size which site?", bases, key="plan-base",
                             format_func=lambda o: f"{o}: {d.name}" if o == SITE else o)
    use_site = base_pick == SITE and d is not None
    site_changes = d.overrides() if use_site else {}
    form = Form("p", lambda p: logic.get(doc, p), lambda p, v: logic.put(doc, p, v), ss["plan_gen"], spec=None)
    st.header("What holds for every plan")
    fixed = doc.setdefault("set", {})
    own = ss.setdefault("plan_own_set", dict(fixed))
    for path, value in list(fixed.items()):  # dotted scenario paths are the keys of one mapping here
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        mine = path in site_changes and value == own.get(path)
        if mine:  # the site described says otherwise, and the form still has the plan file's value
            value = fixed[path] = site_changes[path]
        fixed[path] = st.number_input(
            f"{label_of(path)} (`{path}`)", value=value, key=form.key(f"set:{path}:{use_site}"),
            help="Holds in every plan, like the plan file's set:." + (" Taken from the site described." if mine else ""))
    st.header("Levers: what the planner may choose")
    for name, dec in (doc.get("decisions") or {}).items():
        with st.expander(f"{dec.get('label') or name.replace('_', ' ')}", expanded=True):
            x, y, z = st.columns([2, 1, 1])
            with x:
                st.caption("Sets " + ", ".join(f"`{p}`" for p in dec.get("set") or {}))
            if dec.get("range"):
                with y:
                    form.number(f"decisions.{name}.range.0", "From", integer=True)
                with z:
                    form.number(f"decisions.{name}.range.1", "To", integer=True)
    st.header("Targets: what every plan must meet")
    for i, con in enumerate(doc.get("constraints") or []):
        p = f"constraints.{i}"
        x, y, z, w = st.columns([3, 1, 1, 1])
        with x:
            form.text(f"{p}.kpi", f"Target {i + 1}: measure (KPI name)")
        sense = "min" if con.get("min") is not None else "max"
        with y:
            way = st.selectbox("is", ["at least", "at most"], index=0 if sense == "min" else 1,
                               key=form.key(f"{p}:sense"))
        new = "min" if way == "at least" else "max"
        if new != sense:
            con[new] = con.pop(sense)
            sense = new
        with z:
            form.number(f"{p}.{sense}", "value", integer=False)
        with w:
            form.number(f"{p}.tolerance", "tolerance", integer=False)
        if con.get("kpi") and con.get(sense) is not None:
            st.caption(md(f"Target {i + 1}: {target_text(con)}"))
    st.header("Objective and budget")
    x, y, z, w = st.columns(4)
    obj = doc.setdefault("objective", {"minimize": "total_cost"})
    goal = "minimize" if "minimize" in obj else "maximize"
    with x:
        new_goal = st.selectbox("Best plan", ["minimize", "maximize"], index=0 if goal == "minimize" else 1,
                                key=form.key("objective:goal"))
        if new_goal != goal:
            obj[new_goal] = obj.pop(goal)
            goal = new_goal
    with y:
        form.text(f"objective.{goal}", "of (a KPI, or total_cost, cost_per_completed_program, completions, margin)")
    with z:
        form.number("replications.first", "Replications per plan, first", integer=True)
    with w:
        form.number("replications.max", "… at most", integer=True)
    size = logic.plan_space(doc)
    st.caption(f"{size} plans in the ranges; each gets {logic.get(doc, 'replications.first')} replications first, "
               f"doubled up to {logic.get(doc, 'replications.max')} where it is close to a target. Plans a cheaper "
               "plan beats, or a smaller plan rules out, are never simulated.")
    running = jobs().get("plan") is not None and jobs()["plan"].running
    x, y = st.columns(2)
    with x:
        workers = st.number_input("Worker processes", min_value=1, value=_default_workers(), step=1, key="plan-jobs")
    base_path = d.source.path if use_site else base_file
    _doc, dropped = logic.plan_document(doc, base_path, site_changes)
    if dropped:
        st.caption("The levers set these fields in every plan, so your changes to them are left out: "
                   + ", ".join(f"`{p}`" for p in dropped))
    with y:
        st.write("")
        if st.button("Find the best plan", type="primary", key="plan-start", disabled=running or size < 1):
            _start("plan", lambda: logic.start_plan(doc, base_path, site_changes, OUTPUTS, int(workers)))
    if st.session_state.get("plan_error"):
        st.error(md(st.session_state["plan_error"]))
    job_status("plan")
    folder = _shown("plan")
    if folder:
        show_plan(plan_view(folder))


def _apply_plan(fields: dict) -> None:
    d = draft()
    if d is None:
        return
    for path, value in fields.items():
        d.set(path, value)
    d.generation += 1


def show_plan(v: views.PlanView) -> None:
    st.header("The recommended plan")
    for s in v.sentences:
        st.markdown(md(s))
    for t in v.targets:
        st.caption(md(t))
    rec = (v.summary.get("recommended") or {}).get("fields")
    if rec:
        st.button("Use the recommended plan for the site described", key="plan-apply", on_click=_apply_plan,
                  args=(rec,), help="Sets the levers' fields on the first page; then run it or compare it.")
    downloads(v.folder, v.report, "plan")
    if v.figure is not None:
        st.image(str(v.figure), caption="Cost against service: every plan simulated, the best trade-offs and "
                                        "the recommended plan")
    if v.rows:
        st.subheader("Plans simulated (the recommended one first)")
        table = {h: [] for h in v.header}
        for r in v.rows:
            cells = [f"{r['plan']}{' (recommended)' if r['recommended'] else ''}", *r["levels"],
                     *(views.plan_cell(c) for c in r["cells"]), r["status"], r["replications"]]
            for h, cell in zip(v.header, cells):
                table[h].append(str(cell))
        st.table(table)


# --------------------------------------------------------------------------- the app


def main() -> None:
    st.set_page_config(page_title="iopsim", layout="wide",
                       menu_items={"Get help": None, "Report a bug": None,
                                   "About": "iopsim: capacity simulator for addiction-treatment programs."})
    state()
    with st.sidebar:
        st.markdown("### iopsim")
        page = st.radio("Page", PAGES, key="page")
        status = st.empty()
    {"Describe the site": describe_page, "Run": run_page, "Compare": compare_page, "Plan": plan_page}[page]()
    with status.container():  # after the page, so that it counts the changes just made
        d = draft()
        if d is not None:
            n = len(d.overrides())
            st.caption(f"Site: {md(d.name)} ({d.source.label}; {n} change{'s' if n != 1 else ''})")
        for job in jobs().values():
            if job.running:
                st.caption(f"Running: {md(job.title)}")

main()
