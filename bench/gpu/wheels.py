"""The Python packages the GPU script carries: derived, fetched, packed.

The lent GPU machine has Python 3.12 with torch 2.11.0+cu130 and the packages
in image_packages.txt, no registry, and takes at most 64 MiB per call (the
repository included). What lorascope needs beyond the image is derived here,
never typed by hand:

    python bench/gpu/wheels.py lock   # -> bench/gpu/wheels.lock
    python bench/gpu/wheels.py pack   # -> .whl/site.tar.xz (run_micro_dag.sh)

`lock` walks pyproject.toml's pins and, below them, the versions the project
venv resolved (the ones CI tests), with the dependency markers evaluated for
CPython 3.12 on Linux x86-64, stopping at every package the image holds (its
copy is used, at its version). Run it with the project venv after changing a
pin. `pack` downloads exactly the locked versions as CPython 3.12 wheels (a
pure wheel built here for the few published only as source), installs them
into one folder with --no-deps, removes the PRUNE paths and compresses it
with xz: 122 MB of wheels become about 54 MB. Downloads are cached under
$LORASCOPE_WHEEL_CACHE (default /tmp/lorascope-wheels). Network: PyPI only.
tests/workflow/test_gpu_bundle.py checks the lock and the pack on the CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LOCK = HERE / "wheels.lock"
IMAGE = HERE / "image_packages.txt"
PACK = REPO / ".whl" / "site.tar.xz"
CACHE = Path(os.environ.get("LORASCOPE_WHEEL_CACHE", "/tmp/lorascope-wheels"))
# What one device call carries, the repository included (device tool README).
CALL_LIMIT = 64 * 2**20
# The GPU machine's interpreter, for dependency markers and wheel tags.
TARGET = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
PLATFORMS = [
    f"manylinux_2_{n}_x86_64" for n in (39, 35, 34, 31, 28, 27, 24, 17, 12, 5)
] + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "any"]
# Paths removed from the installed folder before it is packed: files the GPU
# run never uses, without which the pack would not fit one call.
PRUNE = {
    "wandb/bin": "wandb's service binaries (50 MB), started only by wandb.init(); "
    "sae_lens imports wandb, lorascope never logs to it (log_to_wandb=False)",
    "pulp/solverdir/cbc/osx": "CBC solver builds for other platforms than the "
    "GPU machine's (pulp picks linux/i64 there)",
    "pulp/solverdir/cbc/win": "as above",
    "pulp/solverdir/cbc/linux/i32": "as above",
    "pulp/solverdir/cbc/linux/arm64": "as above",
}
Meta = Callable[[str], tuple[str, list[str]] | None]


def canon(name: str) -> str:
    return canonicalize_name(name)


def image_packages(path: Path = IMAGE) -> dict[str, str | None]:
    """name -> version (None where the image's version was not recorded)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canon(name)] = version or None
    return out


def project_requirements() -> list[Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [Requirement(r) for r in data["project"]["dependencies"]]


def walk(roots: list[Requirement], image: dict, meta: Meta):
    """Follow requirements (markers for TARGET) down to the image's packages.

    `meta(name)` gives (version, Requires-Dist lines) of a package outside
    the image, or None when it has none. Returns (carried: name -> version,
    image_used: name -> the requirements on it, problems)."""
    carried: dict[str, str] = {}
    image_used: dict[str, list[str]] = {}
    problems: list[str] = []
    seen: set[tuple[str, frozenset]] = set()
    todo = [(r, "pyproject.toml") for r in roots]
    while todo:
        req, by = todo.pop()
        name, extras = canon(req.name), frozenset(req.extras)
        if name in image:
            image_used.setdefault(name, []).append(f"{by}: {req}")
            continue
        got = meta(name)
        if got is None:
            problems.append(f"{by} needs {req}: not found")
            continue
        version, requires = got
        if version not in req.specifier:
            problems.append(f"{by} needs {req}, have {name} {version}")
        carried[name] = version
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for line in requires:
            sub = Requirement(line)
            envs = [{**TARGET, "extra": e} for e in sorted(extras) or [""]]
            if sub.marker is None or any(sub.marker.evaluate(e) for e in envs):
                todo.append((sub, f"{name} {version}"))
    return carried, image_used, problems


def image_conflicts(image: dict, image_used: dict) -> tuple[list[str], list[str]]:
    """(requirements the image's recorded version breaks, pins it replaces)."""
    broken, replaced = [], []
    for name, reqs in sorted(image_used.items()):
        version = image[name]
        for line in reqs:
            by, _, spec = line.partition(": ")
            req = Requirement(spec)
            if version is None or version in req.specifier or not req.specifier:
                if by == "pyproject.toml" and version is None:
                    replaced.append(
                        f"{spec}: the image's {name} (version not recorded)"
                    )
                continue
            if by == "pyproject.toml":
                replaced.append(f"{spec}: the image's {name} {version}")
            else:
                broken.append(f"{by} needs {spec}; the image has {version}")
    return broken, replaced


def venv_meta(name: str):
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return None
    return dist.version.split("+")[0], list(dist.requires or [])


def derive() -> tuple[dict, list[str]]:
    """The carried set from pyproject.toml and this interpreter's packages."""
    image = image_packages()
    carried, used, problems = walk(project_requirements(), image, venv_meta)
    broken, replaced = image_conflicts(image, used)
    if problems or broken:
        raise SystemExit("cannot lock:\n  " + "\n  ".join(problems + broken))
    return carried, replaced


def read_lock(path: Path = LOCK) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canon(name)] = version
    return out


def write_lock(carried: dict, replaced: list[str], path: Path = LOCK) -> None:
    head = [
        "# What bench/gpu/run_micro_dag.sh carries to the GPU machine: generated by",
        "# `python bench/gpu/wheels.py lock` (pyproject.toml's pins and the venv's",
        "# resolution below them, for CPython 3.12, less image_packages.txt); do not",
        "# edit. Pins the image's own packages replace there:",
        *(f"#   {r}" for r in replaced),
    ]
    body = [f"{n}=={v}" for n, v in sorted(carried.items())]
    path.write_text("\n".join(head + body) + "\n")


# --- fetching and packing -------------------------------------------------------


def pip(*args: str, quiet: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", *args, *(["-q"] if quiet else [])]
    return subprocess.run(cmd, capture_output=True, text=True)


def _wheel_tags(path: Path) -> tuple[str, str, str, str, str]:
    """(name, version, python tag, abi tag, platform tag) of a wheel file."""
    parts = path.name[: -len(".whl")].split("-")
    return canon(parts[0]), parts[1], *parts[-3:]


def _cached(folder: Path, name: str, version: str) -> Path | None:
    for f in folder.glob("*.whl"):
        got_name, got_version, *_ = _wheel_tags(f)
        if got_name == name and Version(got_version) == Version(version):
            return f
    return None


def fetch(lock: dict, python: str = "3.12") -> list[Path]:
    """One wheel per locked version for CPython `python` on Linux x86-64,
    from the cache or PyPI; a pure wheel built here where PyPI has only
    the source (refused if the build is not pure Python)."""
    folder = CACHE / f"cp{python.replace('.', '')}"
    folder.mkdir(parents=True, exist_ok=True)
    tags = [a for p in PLATFORMS for a in ("--platform", p)]
    out = []
    for name, version in sorted(lock.items()):
        got = _cached(folder, name, version)
        if got is None:
            spec = f"{name}=={version}"
            r = pip("download", "--no-deps", "--only-binary=:all:",
                    "--python-version", python, "--implementation", "cp",
                    *tags, "-d", str(folder), spec)  # fmt: skip
            built = r.returncode != 0
            if built:  # published as source only
                r = pip("wheel", "--no-deps", "-w", str(folder), spec)
                if r.returncode != 0:
                    raise RuntimeError(f"{spec}: no wheel and no build:\n{r.stderr}")
            got = _cached(folder, name, version)
            if got is None:
                raise RuntimeError(f"{spec}: fetched, but no wheel in {folder}")
            if built and _wheel_tags(got)[3:] != ("none", "any"):
                got.unlink()
                raise RuntimeError(f"{spec}: PyPI has only its source, and it "
                                   "builds to a compiled wheel: it cannot be built "
                                   "here for the GPU machine")  # fmt: skip
        out.append(got)
    return out


def wheel_meta(wheels: list[Path]) -> Meta:
    """A `walk` metadata function reading the wheels' own METADATA."""
    table = {}
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            text = z.read(name).decode()
        fields = [ln.split(": ", 1) for ln in text.split("\n\n")[0].splitlines()]
        got = {k: [] for k in ("Name", "Version", "Requires-Dist")}
        for kv in fields:
            if len(kv) == 2 and kv[0] in got:
                got[kv[0]].append(kv[1])
        table[canon(got["Name"][0])] = (got["Version"][0], got["Requires-Dist"])
    return table.get


def install(wheels: list[Path], dest: Path, python: str = "3.12") -> None:
    """Exactly these wheels into `dest` (--no-deps; pip refuses a wheel that
    does not fit CPython `python` on Linux x86-64)."""
    shutil.rmtree(dest, ignore_errors=True)
    tags = [a for p in PLATFORMS for a in ("--platform", p)]
    r = pip("install", "--no-deps", "--no-compile", "--only-binary=:all:",
            "--python-version", python, "--implementation", "cp", *tags,
            "--target", str(dest), *map(str, wheels))  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"installing the carried wheels failed:\n{r.stderr}")


def prune(dest: Path) -> list[str]:
    gone = []
    for rel in PRUNE:
        path = dest / rel
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            gone.append(rel)
    return gone


def pack(lock: dict | None = None, out: Path = PACK) -> Path:
    """The carried folder as one .tar.xz (cached by the lock and PRUNE)."""
    lock = read_lock() if lock is None else lock
    key = hashlib.sha256(json.dumps([sorted(lock.items()), sorted(PRUNE)]).encode())
    cached = CACHE / f"site-{key.hexdigest()[:16]}.tar.xz"
    if not cached.exists():
        stage = CACHE / "stage312"
        install(fetch(lock), stage)
        prune(stage)
        tmp = cached.with_suffix(".part")
        with open(tmp, "wb") as f:  # xz -9 on two threads: minutes, not tens
            tar = subprocess.Popen(["tar", "-C", str(stage), "-cf", "-", "."],
                                   stdout=subprocess.PIPE)  # fmt: skip
            subprocess.run(["xz", "-9", "-T2"], stdin=tar.stdout, stdout=f, check=True)
            if tar.wait() != 0:
                raise RuntimeError("tar failed")
        tmp.rename(cached)
        shutil.rmtree(stage)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, out)
    return out


def unpack(path: Path, dest: Path) -> None:
    with tarfile.open(path) as tar:
        tar.extractall(dest, filter="data")


def repo_bytes() -> int:
    """What a device call sends besides the pack: files git does not ignore."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    return sum(os.path.getsize(REPO / n.decode()) for n in names if n and
               os.path.isfile(REPO / n.decode()))  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=["lock", "pack"])
    step = ap.parse_args(argv).step
    if step == "lock":
        carried, replaced = derive()
        write_lock(carried, replaced)
        print(f"{LOCK.relative_to(REPO)}: {len(carried)} packages")
        return
    path = pack()
    size, rest = path.stat().st_size, repo_bytes()
    print(f"{path.relative_to(REPO)}: {size / 2**20:.1f} MiB "
          f"(+ {rest / 2**20:.1f} MiB of repository; a call takes 64)")  # fmt: skip
    if size + rest > CALL_LIMIT:
        raise SystemExit("over the 64 MiB a device call carries")


if __name__ == "__main__":
    main()
