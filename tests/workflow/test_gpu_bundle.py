"""The GPU script's packages work where it is meant to run, checked on a CPU.

bench/gpu/run_micro_dag.sh runs on the lent GPU machine (CPython 3.12, torch
2.11.0+cu130 and the packages of bench/gpu/image_packages.txt, no registry)
with what .whl/site.tar.xz carries: bench/gpu/wheels.lock, derived by
bench/gpu/wheels.py. Three failures were possible before (issue 31, item 8):
a package missing from the carried list (snakemake's tenacity), an unpinned
transitive one (a transformer_lens that sae_lens cannot import), and a pack
over the 64 MiB one call carries. These tests rebuild the pack from exactly
the lock, the way fetch_wheels.sh does, and check each.

How this approximates the GPU machine. The lock's closure and the pack are
exact: the CPython 3.12 wheels themselves, their own METADATA read with
3.12's markers, installed with `--python-version 3.12`. The imports and the
dry run need an interpreter, and the image's torch stack cannot be installed
here, so they run under this venv's Python 3.11 with `-S` (no site-packages)
on two folders: the same locked versions installed for 3.11 (every
py3-none-any wheel is the very file carried, which the test checks; the few
compiled or per-version ones are the same versions built for 3.11) and
stand-ins for the image: this
venv's own copies of exactly the packages the image lists, nothing else. So
a package neither carried nor in the image fails to import here as it would
there; what is not checked is the image's own versions (torch 2.11 vs 2.13
here), which run_micro_dag.sh records with `pip check` on the device.

Downloads (PyPI only) are cached under $LORASCOPE_WHEEL_CACHE (default
/tmp/lorascope-wheels); the first run builds the pack (about 10 minutes on
two busy cores, mostly xz), later ones reuse it. Skipped, saying why, only
when pip cannot reach PyPI.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import wfrun

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "gpu"))
import wheels  # noqa: E402 (bench/gpu/wheels.py)

pytestmark = pytest.mark.timeout(1800)


def _pypi_reachable() -> str | None:
    try:
        urllib.request.urlopen("https://pypi.org/simple/tenacity/", timeout=20)
    except OSError as err:
        return f"pip cannot reach PyPI ({err}): the carried wheels cannot be fetched"
    return None


def _fetch(python):
    try:
        return wheels.fetch(wheels.read_lock(), python)
    except RuntimeError:
        reason = _pypi_reachable()
        if reason:
            pytest.skip(reason)
        raise


@pytest.fixture(scope="module")
def wheels312():
    return _fetch("3.12")


def _any_python(wheel: Path) -> bool:
    """A wheel for every Python 3 (py3-none-any), unlike compiled ones and
    pure ones built per version (multiprocess: py312-none-any)."""
    python, abi, platform = wheels._wheel_tags(wheel)[2:]
    return set(python.split(".")) <= {"py2", "py3"} and (abi, platform) == (
        "none",
        "any",
    )


@pytest.fixture(scope="module")
def target311(wheels312, tmp_path_factory):
    """The locked versions installed for this Python (3.11), pruned like the
    pack; every pure wheel is the carried file itself."""
    found = _fetch("3.11")
    same = {w.name for w in wheels312 if _any_python(w)}
    assert same <= {w.name for w in found}, "a py3-none-any wheel was not reused"
    assert len(same) > 0.85 * len(wheels312), "mostly version-specific wheels?"
    dest = tmp_path_factory.mktemp("site311")
    wheels.install(found, dest, python="3.11")
    wheels.prune(dest)
    return dest


@pytest.fixture(scope="module")
def image_standins(tmp_path_factory):
    """This venv's copies of exactly the image's packages (links), so a
    package neither carried nor in the image is missing here too."""
    dest = tmp_path_factory.mktemp("image")
    image = wheels.image_packages()
    for dist in md.distributions():
        if wheels.canon(dist.metadata["Name"]) not in image or not dist.files:
            continue
        for top in {f.parts[0] for f in dist.files if f.parts[0] != ".."}:
            src = Path(dist.locate_file(top))
            link = dest / top
            if src.exists() and not link.exists() and top != "__pycache__":
                link.symlink_to(src)
    return dest


def _run_isolated(code_or_args, paths, cwd=REPO, timeout=600):
    """This interpreter without its site-packages, on `paths` only."""
    env = {k: v for k, v in wfrun.env().items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join(map(str, paths))
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run(
        [sys.executable, "-S", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_lock_is_the_closure_of_the_pins_less_the_image(wheels312):
    """Walking pyproject.toml's pins through the carried wheels' own METADATA
    (Python 3.12 markers) reaches exactly the lock and stops at the image:
    nothing missing (tenacity), nothing unpinned or extra, each pin honoured
    or replaced by the image's package."""
    lock, image = wheels.read_lock(), wheels.image_packages()
    carried, used, problems = wheels.walk(
        wheels.project_requirements(), image, wheels.wheel_meta(wheels312)
    )
    assert problems == []
    assert carried == lock
    broken, _ = wheels.image_conflicts(image, used)
    assert broken == []  # no carried package needs another version of the image's
    for req in wheels.project_requirements():
        name = wheels.canon(req.name)
        assert name in image or lock[name] in req.specifier, req
    for name in ("tenacity", "platformdirs", "annotated-types", "typing-inspection"):
        assert name in lock  # snakemake's and pydantic's, missing before
    assert lock["transformer-lens"] == "3.9.0"  # what sae-lens 6.54.12 imports


def test_pack_fits_one_device_call(wheels312):
    pack = wheels.pack()
    size, repo = pack.stat().st_size, wheels.repo_bytes()
    assert size + repo < wheels.CALL_LIMIT, (
        f"{size / 2**20:.1f} MiB pack + {repo / 2**20:.1f} MiB repository"
    )


def test_snakemake_sae_lens_and_lorascope_import_from_carried_and_image(
    target311, image_standins
):
    code = (
        "import importlib, pkgutil, snakemake, sae_lens, lorascope\n"
        "for m in pkgutil.walk_packages(lorascope.__path__, 'lorascope.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('imported', snakemake.__version__, sae_lens.__version__)\n"
    )
    paths = [REPO / "src", target311, image_standins]
    proc = _run_isolated(code, paths)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported 9.27.1 6.54.12" in proc.stdout
    # Without the carried folder the same import fails: the check can fail.
    bare = _run_isolated("import snakemake", [REPO / "src", image_standins])
    assert bare.returncode != 0 and "ModuleNotFoundError" in bare.stderr


def test_micro_cuda_dag_dry_runs_from_carried_and_image(
    target311, image_standins, tmp_path
):
    """run_micro_dag.sh's snakemake command, as a dry run."""
    work = wfrun.workdir(tmp_path / "w")
    args = ["-m", "snakemake", "all", "--snakefile", str(REPO / "Snakefile"),
            "--cores", "8", "--workflow-profile", "none", "-n", "--quiet", "rules",
            "--configfile", str(REPO / "config" / "config.yaml"),
            str(REPO / "tests" / "configs" / "micro.yaml"),
            str(REPO / "bench" / "gpu" / "micro_cuda.yaml")]  # fmt: skip
    proc = _run_isolated(args, [target311, image_standins], cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rule in ("train_rank1", "eval_generate", "train_sae", "kl_ablation"):
        assert rule in proc.stdout, proc.stdout
