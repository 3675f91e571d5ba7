"""A simulation of Colab's GPU runtime on this machine, for tests/test_colab.py.

Colab's stack as tests/data/colab_stack.txt lists it (Python 3.13, torch 2.11, numpy 2.1, pandas 2.2,
IPython 7, ipywidgets 7, ...) is installed once into a *base* environment, cached under
``$FLOWSEP_COLAB_CACHE`` (default ``~/.cache/flowsep/colab``) and rebuilt when the list changes. Each test
session then makes a fresh *runtime* environment from it (a copy made of hard links), where the chapters'
first cell installs what it installs; the base stays as Colab ships it. Its kernel
(Colab's ipykernel) imports ``google.colab``, numpy, pandas and matplotlib before the first cell, as
Colab's does. ``google-colab`` itself is a stand-in: a module that says "on Colab" and a distribution that
requires pandas==2.2.3 as the real one does, so pip reports a change of pandas as a conflict.

Run alone (``python tests/colab_sim.py``) it builds the base environment and prints where it is.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

STACK = Path(__file__).parent / "data" / "colab_stack.txt"
KERNEL_NAME = "colab-sim"
PRELOADED = ("google.colab", "numpy", "pandas", "matplotlib")


def read_stack(path=STACK) -> tuple[str, list[str]]:
    """``(python version, ["name==version", ...])`` of the stack file (comments dropped)."""
    python, pins = None, []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("python "):
            python = line.split()[1]
        elif line:
            pins.append(line)
    if python is None:
        raise ValueError(f"{path} names no python version (a line `python 3.13`)")
    return python, pins


def find_python(version: str) -> Path:
    """The interpreter of ``version`` (e.g. "3.13"): one of pyenv's versions, or python3.13 on PATH."""
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]
    try:
        roots.insert(0, subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip())
    except OSError:
        pass
    for root in filter(None, roots):
        for candidate in sorted(Path(root, "versions").glob(f"{version}.*/bin/python{version}"), reverse=True):
            return candidate
    on_path = shutil.which(f"python{version}")
    if on_path and "/shims/" not in on_path:   # a pyenv shim is not an interpreter
        return Path(on_path)
    raise RuntimeError(f"the Colab simulation needs Python {version} (through pyenv, or on PATH as "
                       f"python{version}: `pyenv install {version}`)")


def cache_root() -> Path:
    return Path(os.environ.get("FLOWSEP_COLAB_CACHE") or Path.home() / ".cache" / "flowsep" / "colab")


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


def _write_google_colab(site: Path, pins: list[str]) -> None:
    """The stand-in ``google.colab`` package and its distribution's metadata (requires Colab's pandas)."""
    pandas = next(p for p in pins if p.lower().startswith("pandas=="))
    package = site / "google" / "colab"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""A stand-in for Colab\'s module: imported means "on Colab"."""\n')
    info = site / "google_colab-1.0.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: google-colab\nVersion: 1.0.0\n"
                                   f"Requires-Dist: {pandas}\n")
    (info / "INSTALLER").write_text("flowsep-colab-sim\n")
    (info / "RECORD").write_text("google/colab/__init__.py,,\n")
    (info / "top_level.txt").write_text("google\n")


def base_environment(stack=STACK, log=print) -> Path:
    """The cached base environment of Colab's stack (built on first use, atomically): its folder."""
    text = Path(stack).read_bytes()
    version, pins = read_stack(Path(stack))
    key = hashlib.sha256(text).hexdigest()[:16]
    base = cache_root() / f"base-{key}"
    if (base / "ready").is_file():
        return base
    python = find_python(version)
    tmp = base.with_name(base.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log(f"building the Colab simulation's base environment (Python {version}, {len(pins)} pins) in {base}")
    subprocess.run([str(python), "-m", "venv", str(tmp)], check=True)
    pip = [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + [p for p in pins if p.startswith("pip==")], check=True)
    subprocess.run(pip + [p for p in pins if not p.startswith("pip==")], check=True)
    _write_google_colab(site_packages(tmp / "bin" / "python"), pins)
    # a venv's scripts name its folder: the base is used through the runtime's path only, never moved
    (tmp / "ready").write_text(json.dumps({"python": version, "pins": pins}) + "\n")
    shutil.rmtree(base, ignore_errors=True)
    tmp.rename(base)
    return base


def runtime_environment(base: Path, folder: Path) -> Path:
    """A fresh copy of the base environment in ``folder`` (hard links where it can: instant, and pip replaces files
    rather than writing into them, so the base stays as it is): its python.

    Colab's packages are the interpreter's own, not a layer on a path: pip's isolated builds do not see
    them. A copy keeps that true, where a path added by a .pth file would not.
    """
    if subprocess.run(["cp", "-al", str(base), str(folder)], capture_output=True).returncode:
        shutil.rmtree(folder, ignore_errors=True)   # another file system: a plain copy
        subprocess.run(["cp", "-a", str(base), str(folder)], check=True)
    (folder / "ready").unlink()
    python = folder / "bin" / "python"
    # the venv's own configuration names no folder; its scripts do, and the simulation runs none of them
    return python


def kernel(runtime_python: Path, folder: Path) -> dict:
    """A Jupyter kernel spec for the runtime, preloading what Colab's kernel has imported; the
    environment variables that make it visible (``JUPYTER_PATH``, ``IPYTHONDIR``)."""
    spec = folder / "jupyter" / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(runtime_python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab (simulated)", "language": "python"}))
    startup = folder / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-colab.py").write_text("".join(f"import {m}\n" for m in PRELOADED))
    return {"JUPYTER_PATH": str(folder / "jupyter"), "IPYTHONDIR": str(folder / "ipython")}


if __name__ == "__main__":
    print(base_environment())
    sys.exit(0)
