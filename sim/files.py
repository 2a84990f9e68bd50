"""Run folders: everything a run produced, written atomically.

A run is assembled in a hidden temporary folder beside its destination and
renamed into place only when every file is written, so an interrupted run
never leaves a folder (or a file) that looks complete.  ``manifest.json`` is
always present in a finished run folder.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from typing import TYPE_CHECKING

from iopsim.errors import IopsimError

if TYPE_CHECKING:  # pandas is imported by whoever builds the tables
    import pandas as pd

PACKAGES = ("iopsim", "simpy", "numpy", "scipy", "pandas", "pyarrow", "pydantic", "matplotlib", "typer")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision(where: Path | None = None) -> str | None:
    """The git commit of the code (with ``-dirty`` if modified), or None outside git."""
    cwd = where or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, fallback: str = "run") -> str:
    """A file-name-safe form of a scenario or sweep name, for default output folders.

    Only letters, digits, ``.``, ``_`` and ``-`` are kept (other runs of
    characters become ``-``); leading dots and dashes are dropped, so the name
    can never climb out of its folder (``../../x`` becomes ``x``) or hide; at
    most 80 characters.
    """
    cleaned = _UNSAFE.sub("-", str(name)).lstrip(".-")[:80].rstrip(".-")
    return cleaned or fallback


def default_run_dir(base: Path, name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = base / f"{safe_name(name)}-{stamp}"
    i = 1
    while path.exists():
        i += 1
        path = base / f"{safe_name(name)}-{stamp}-{i}"
    return path


def check_out_dir(final: Path) -> None:
    """Refuse an output folder that already holds files, or that cannot be made (nothing written is ever replaced)."""
    final = Path(final)
    if "\x00" in str(final):
        raise IopsimError(f"{final!r}: a folder name cannot contain a NUL character; choose another --out")
    try:
        if final.exists() and (not final.is_dir() or any(final.iterdir())):
            raise IopsimError(f"{final}: output folder exists and is not empty; choose another --out")
    except OSError as exc:
        raise IopsimError(f"{final}: cannot use this output folder ({exc.strerror or exc}); choose another --out") from None
    for parent in final.parents:
        if parent.exists():
            if not parent.is_dir():
                raise IopsimError(f"{final}: {parent} is a file, not a folder; choose another --out")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise IopsimError(f"{final}: cannot write in {parent} (permission denied); choose another --out")
            break


def make_folder(folder: Path) -> Path:
    """Create a results folder (and its parents), or fail in one line that says why (a file in the way, no
    permission, a name too long); resuming into an existing folder is fine."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else (exc.strerror or str(exc))
        raise IopsimError(f"{folder}: cannot create this folder ({why}); choose another --out") from None
    return folder


def claim_results_folder(folder: Path, kind: str, digest: str, what: str) -> None:
    """Refuse a results folder that holds anything but earlier results of the same ``what`` (same hash).

    Sweeps and plans resume into their folder, so a folder of another file's
    results, or of anything else, must never be mixed into or written over.
    """
    folder = Path(folder)
    if (folder / "manifest.json").exists():
        if read_manifest(folder, kind).get(f"{kind}_hash") != digest:
            raise IopsimError(f"{folder}: holds results of a different {what} (or base scenario); use another --out")
    elif folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise IopsimError(f"{folder}: output folder exists and is not a {kind} of this file; choose another --out")


class RunFolder:
    """Write files into a staging folder; ``commit()`` moves it to ``final``.

    Used as a context manager: leaving the block with an exception removes the
    staging folder and leaves ``final`` untouched.
    """

    def __init__(self, final: Path):
        self.final = Path(final)
        check_out_dir(self.final)
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.final.name[:60]}.", suffix=".partial",
                                              dir=self.final.parent))
        except OSError as exc:
            raise IopsimError(f"{self.final}: cannot create the output folder ({exc.strerror or exc}); "
                              "choose another --out") from None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:  # any exception, Ctrl-C and SIGTERM included: nothing half-written stays
            shutil.rmtree(self.path, ignore_errors=True)

    def file(self, name: str) -> Path:
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_text(self, name: str, text: str) -> Path:
        p = self.file(name)
        p.write_text(text, encoding="utf-8")
        return p

    def write_json(self, name: str, data) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, default=_json_default, allow_nan=True) + "\n")

    def write_table(self, stem: str, df: pd.DataFrame, formats=("csv", "json")) -> None:
        for fmt in formats:
            if fmt == "csv":
                df.to_csv(self.file(f"{stem}.csv"), index=False)
            elif fmt == "json":
                self.write_text(f"{stem}.json", df.to_json(orient="records", indent=2, double_precision=15) + "\n")
            elif fmt == "parquet":
                df.to_parquet(self.file(f"{stem}.parquet"), index=False)

    def commit(self) -> Path:
        for root, _dirs, files in os.walk(self.path):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        try:
            if self.final.exists():
                self.final.rmdir()  # empty when checked in __init__; not if another run finished first
            os.replace(self.path, self.final)
        except OSError:
            # Another run with the same --out got there first: its folder stays as it is.
            shutil.rmtree(self.path, ignore_errors=True)
            raise IopsimError(f"{self.final}: another run wrote this folder while this one ran; "
                              "its results are kept and this run's are discarded") from None
        return self.final


def atomic_write_text(path: Path, text: str) -> None:
    """Write a single file atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; match the rest of a run folder
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(folder: Path, what: str = "run") -> dict:
    """The ``manifest.json`` of a finished folder, or one line saying the folder is missing or damaged."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise IopsimError(f"{folder}: not a {what} folder (manifest.json missing)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict) or "kind" not in data:
        raise IopsimError(f"{folder}: manifest.json is damaged (empty, truncated or not an iopsim manifest); "
                          "re-run into a new folder, or delete this one")
    return data


def manifest(**fields) -> dict:
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "versions": versions(),
        "git_revision": git_revision(),
        "platform": platform.platform(),
        **fields,
    }


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
