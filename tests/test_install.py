"""The package as a user installs it: a wheel (not the editable source) that carries the shipped models,
captions from another folder, and says where it looked when there is no model or no data."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from captioner.serving import model_folder as mf

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the source (the working tree gets no build/ folder)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "captioner", src / "captioner", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (src / "models").symlink_to(ROOT / "models", target_is_directory=True)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "--disable-pip-version-check", "-w", work / "dist", src])
    [built] = (work / "dist").glob("captioner-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    """The wheel installed with pip into a folder of its own (used through PYTHONPATH)."""
    target = tmp_path_factory.mktemp("site")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--disable-pip-version-check",
          "--target", target, wheel])
    return target


def _python(code: str, site: Path, cwd: Path, **env) -> subprocess.CompletedProcess:
    """Run ``code`` with the installed copy first on the path, from ``cwd``."""
    environ = {k: v for k, v in os.environ.items() if k not in (mf.MODELS_ENV, "CAPTIONER_DATA", "PYTHONPATH")}
    return _run([sys.executable, "-c", code], cwd=cwd, env={**environ, "PYTHONPATH": str(site), **env})


def _model_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def test_wheel_holds_every_package_and_the_default_model_with_its_members(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "captioner").rglob("*.py")}
    assert sources - names == set(), "modules missing from the wheel: add their package to pyproject.toml"
    default = ROOT / "models" / mf.DEFAULT_MODEL_NAME
    for folder in [default] + (mf.ensemble_members(default) if mf.is_ensemble_folder(default) else []):
        expected = {f"captioner/models/{folder.name}/{name}" for name in _model_files(folder)}
        assert expected and expected - names == set()
    shared = {f"captioner/models/{name}" for name in (mf.DOMAIN_FILE, mf.NEIGHBOURS_FILE)}  # the confidence model's
    assert shared - names == set()
    assert not any(n.startswith(("models/", "tests/")) for n in names)


def test_installed_copy_captions_from_another_folder(site, xception_weights, tmp_path):
    code = f"""
import sys
from pathlib import Path
import captioner
from captioner import Captioner
from PIL import Image
assert Path(captioner.__file__).resolve().is_relative_to(Path({str(site)!r}).resolve()), captioner.__file__
Image.new("RGB", (96, 72), (40, 120, 200)).save("x.jpg")
cap = Captioner.load()
print("MODEL", cap.checkpoint.folder.resolve())
print("MEMBERS", *[m.folder.resolve() for m in cap.checkpoint.members])
[result] = cap.caption(["x.jpg"])
print("TEXT", result.text)
print("BAND", result.assessment.band if result.assessment else cap.confidence_problem)
"""
    out = _python(code, site, tmp_path).stdout
    lines = dict(line.split(" ", 1) for line in out.splitlines() if line.split(" ", 1)[0] in ("MODEL", "MEMBERS", "TEXT", "BAND"))
    models = (site / "captioner" / "models").resolve()
    assert Path(lines["MODEL"]) == models / mf.DEFAULT_MODEL_NAME
    assert all(Path(m).parent == models for m in lines["MEMBERS"].split())  # "../merge-lstm" stays inside
    assert lines["TEXT"].strip()
    assert lines["BAND"] in ("high", "medium", "low"), lines["BAND"]  # the calibration travels with the model


def test_installed_copy_without_models_or_data_names_where_it_looked(site, tmp_path):
    bare = tmp_path / "bare"  # the installed copy less its models
    shutil.copytree(site, bare, ignore=lambda folder, names: ["models"] if Path(folder).name == "captioner" else [])
    empty = tmp_path / "empty-models"
    empty.mkdir()
    code = """
from captioner.serving.model_folder import CheckpointError, load_checkpoint
from captioner.pipeline.data import DataError, load_dataset
for attempt, error in ((load_checkpoint, CheckpointError), (load_dataset, DataError)):
    try:
        attempt()
    except error as err:
        print("ERROR", err)
    else:
        raise SystemExit(f"{attempt.__name__} found something")
"""
    out = _python(code, bare, tmp_path, **{mf.MODELS_ENV: str(empty)}).stdout
    model_error, data_error = [line[6:] for line in out.splitlines() if line.startswith("ERROR ")]
    assert mf.MODELS_ENV in model_error and str(empty) in model_error
    assert str(bare / "captioner" / "models") in model_error and "installed with the package" in model_error
    assert "repository" in model_error and "--model" in model_error
    assert "--data" in data_error and "CAPTIONER_DATA" in data_error
