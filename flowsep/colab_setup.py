"""Installing flowsep on Colab without changing what Colab ships: what the chapters' first cell runs.

The first cell clones the repository into ``flowsep-src`` and runs :func:`install` from this file, loaded
on its own (the standard library only: flowsep is not installed yet). The rule:

- everything already installed stays at its version (a constraint ``name==version`` for each: Colab's
  torch, torchaudio, numpy, pandas, scipy, matplotlib, IPython, ipywidgets, ... are used as they are);
- what Colab lacks (musdb, museval, stempeg, openunmix, torchmetrics, pretty_midi, pyfluidsynth and their
  own dependencies) is pinned to the versions of the repository's constraints.txt, the ones `make test`
  runs with;
- flowsep is installed from the clone at its commit (``git+file://...@commit``), so pip records the
  commit: running the cell again with flowsep installed at that commit installs nothing.

Should pip still change a package that the kernel has imported (flowsep itself included, when another
commit was installed and imported before), :func:`install` raises :class:`RestartNeeded`, shown by
IPython as its one line: restart the session and run the cell again. A failing pip is one line too.
"""
import importlib.metadata as metadata
import json
import re
import subprocess
import sys
from pathlib import Path

#: the system library that pyfluidsynth loads (the synthetic songs), and its Debian/Ubuntu package
FLUIDSYNTH = ("fluidsynth", "libfluidsynth3")


class SetupError(Exception):
    """A problem of the install, said in one line (IPython shows it instead of a traceback)."""

    def _render_traceback_(self):
        return [f"flowsep: {self}"]


class RestartNeeded(SetupError):
    """pip changed a package that is already imported: the session must restart."""


class InstallFailed(SetupError):
    """pip failed."""


def canonical(name: str) -> str:
    """A distribution's name as pip compares it (PEP 503): ``PyYAML`` -> ``pyyaml``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    """``{canonical name: version}`` of every installed distribution, the first on ``sys.path`` winning."""
    out = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(canonical(name), dist.version)
    return out


def constraints(pins_file: Path, present: dict[str, str]) -> list[str]:
    """The lines of the install's constraints file: every installed distribution held at its version
    (flowsep itself excepted), then the pins of ``pins_file`` for what is not installed."""
    held = [f"{name}=={version}" for name, version in sorted(present.items()) if name != "flowsep"]
    pins = []
    for line in Path(pins_file).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        name = re.split(r"[=<>!~;\[ ]", line, maxsplit=1)[0]
        if line and canonical(name) not in present and canonical(name) != "flowsep":
            pins.append(line)
    return held + pins


def installed_commit() -> str | None:
    """The commit flowsep was installed from (pip's direct_url.json), None if not installed from git."""
    try:
        raw = metadata.distribution("flowsep").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    return (json.loads(raw or "{}").get("vcs_info") or {}).get("commit_id")


def restart_needed(before: dict[str, str], after: dict[str, str], modules=None) -> list[str]:
    """Distributions whose version changed (or that were removed) while a module of theirs is imported."""
    modules = sys.modules if modules is None else modules
    changed = {name for name, version in before.items() if after.get(name) != version}
    if not changed:
        return []
    providers = metadata.packages_distributions()
    imported = {canonical(dist) for top in {m.split(".")[0] for m in modules} for dist in providers.get(top, [])}
    return sorted(changed & imported)


def _ensure_fluidsynth(run) -> None:
    import ctypes.util
    if ctypes.util.find_library(FLUIDSYNTH[0]) is None:
        run(f"apt-get -qq update && apt-get -qq install -y {FLUIDSYNTH[1]}", shell=True, check=True)


def install(src, run=subprocess.run, python=sys.executable) -> str:
    """Install flowsep from the clone ``src`` at its checked-out commit; a line saying what was done.

    Raises :class:`RestartNeeded` when pip changed a package that this process has imported.
    """
    src = Path(src).resolve()
    commit = run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                 check=True).stdout.strip()
    previous = installed_commit()
    if previous == commit:
        return f"flowsep {commit[:10]} is installed"
    _ensure_fluidsynth(run)
    before = installed()
    pins = src / "colab-constraints.txt"
    pins.write_text("\n".join(constraints(src / "constraints.txt", before)) + "\n")
    try:
        run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(pins),
             f"flowsep @ git+file://{src}@{commit}"], check=True)
    except subprocess.CalledProcessError:
        raise InstallFailed(f"pip could not install flowsep {commit[:10]} (its messages are above); "
                            f"the constraints it was given are in {pins}") from None
    after = installed()
    stale = restart_needed(before, after)
    if previous and "flowsep" in sys.modules:   # another commit's code is on disk now, not in memory
        stale = sorted({*stale, "flowsep"})
    if stale:
        raise RestartNeeded(f"pip changed {', '.join(stale)}, already imported: restart the session "
                            "(Runtime > Restart session) and run this cell again")
    new = sorted(f"{name} {after[name]}" for name in after if name not in before and name != "flowsep")
    return f"flowsep {commit[:10]} installed" + (f", with {', '.join(new)}" if new else "")
