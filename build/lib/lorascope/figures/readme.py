"""Small copies of the embedded run's main figures for the README.

Run by `make readme-figures` (not a workflow rule: docs/figures/ is part of
the repository, not of a run):

    python -m lorascope.figures.readme results/toy/figures docs/figures NAME...

Each `NAME.png` is downscaled to at most `--width` pixels and saved with PNG
optimisation, so the repository stays small and the README stays current.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from lorascope.core.io import atomic_path

__all__ = ["export_small"]


def export_small(
    src: Path, dst: Path, names: list[str], width: int = 800
) -> list[Path]:
    """Write dst/NAME.png for each name; fails before writing if one is missing."""
    missing = [n for n in names if not (src / f"{n}.png").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{src}: no {', '.join(f'{n}.png' for n in missing)}; build the figures "
            "first (make readme-figures runs the embedded workflow for them)"
        )
    out = []
    for name in names:
        with Image.open(src / f"{name}.png") as im:
            if im.width > width:
                im = im.resize(
                    (width, round(im.height * width / im.width)), Image.LANCZOS
                )
            target = dst / f"{name}.png"
            with atomic_path(target) as tmp:
                im.save(tmp, format="PNG", optimize=True)
        out.append(target)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("names", nargs="+")
    ap.add_argument("--width", type=int, default=800)
    args = ap.parse_args(argv)
    for path in export_small(args.src, args.dst, args.names, args.width):
        print(path)


if __name__ == "__main__":
    main()
