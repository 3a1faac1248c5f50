#!/usr/bin/env python3
"""The image's expected size without a container runtime: runs the Dockerfile's own install
command (read from it, so the two cannot drift) into a fresh virtual environment built from the
same files the build context holds, then prints its size, its largest packages, and the total
with the slim Python base. ``make image-size``; ``--extras postgres,finetune`` for the LoRA image.

Standard library only.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = Path(__file__).with_name("Dockerfile")
#: python:3.11-slim-bookworm, uncompressed, as registries list it (amd64); not measured here.
BASE_MB = 125


def install_command(dockerfile: Path) -> tuple[list[str], str, str]:
    """The build stage's `pip install` (its arguments), its default EXTRAS and the extra index."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    (run,) = re.findall(r"^RUN (/opt/llmtune/bin/pip install [^&]*)", text, re.M)
    extras = re.search(r"^ARG EXTRAS=(\S+)", text, re.M)
    index = re.search(r"^ARG PIP_EXTRA_INDEX_URL=(\S+)", text, re.M)
    return shlex.split(run)[1:], extras[1] if extras else "", index[1] if index else ""


def packages() -> list[str]:
    """The project's packages, as pyproject.toml lists them for setuptools (what the build context copies)."""
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    return [name.rstrip("*") for name in found]


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extras", help="as the build argument EXTRAS (default: the Dockerfile's)")
    args = parser.parse_args()
    pip_args, default_extras, index = install_command(DOCKERFILE)
    extras = args.extras or default_extras
    with tempfile.TemporaryDirectory(prefix="llmtune-image-") as tmp:
        context, venv = Path(tmp) / "src", Path(tmp) / "venv"
        context.mkdir()
        for name in ("pyproject.toml", "constraints.txt", "README.md"):
            shutil.copy(ROOT / name, context / name)
        for package in packages():
            shutil.copytree(ROOT / package, context / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        cmd = [str(venv / "bin" / "pip"), *[a.replace("${EXTRAS}", extras) for a in pip_args], "-q"]
        env_index = ["--extra-index-url", index] if index and "finetune" in extras else []
        subprocess.run([*cmd, *env_index], cwd=context, check=True)
        subprocess.run([str(venv / "bin" / "pip"), "uninstall", "--yes", "-q", "pip"], check=True)
        site = next((venv / "lib").glob("python3*/site-packages"))
        sizes = sorted(((folder_mb(p), p.name) for p in site.iterdir() if p.is_dir()), reverse=True)
        total = folder_mb(venv)
        print(f"image EXTRAS={extras}: /opt/llmtune {total:.0f} MB; with python:3.11-slim (~{BASE_MB} MB): "
              f"~{total + BASE_MB:.0f} MB uncompressed")  # fmt: skip
        print("largest packages: " + ", ".join(f"{name} {mb:.0f} MB" for mb, name in sizes[:8]))


if __name__ == "__main__":
    main()
