"""Images: sizes, and build times cold (an empty image store and cache) and warm (this machine's).

Runs tools/images.sh twice into a fresh $HOME (cold: the Debian base, then each target, timed part
by part; then warm: everything found) and once against ~/.cache (warm, as CI's second run sees it).
Prints each image's size, each part's cold build time, and the warm/cold ratio. Target: operator
image at most 225 MB (its bound is 250 MB; a tenth is kept for updates of the lock).

    .venv/bin/python benchmarks/images.py
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build(home: Path, times: Path) -> tuple[list[str], float]:
    """Run tools/images.sh with `home` as $HOME; (image references, seconds)."""
    env = {**os.environ, "HOME": str(home), "OLIVEKUBE_IMAGES_TIMES": str(times)}
    began = time.monotonic()
    out = subprocess.run(["bash", "tools/images.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return out.stdout.split()[-3:], time.monotonic() - began


def size(home: Path, ref: str) -> int:
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(home / ".cache/olivekube/containers/storage.conf")}
    command = ["podman", "image", "inspect", "--format", "{{.Size}}", ref]
    out = subprocess.run(command, env=env, capture_output=True)
    return int(out.stdout)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="olivekube-images-") as tmp:
        home = Path(tmp)
        times = home / "times"
        refs, cold = build(home, times)
        _, warm = build(home, home / "warm-times")
        parts = dict(line.split() for line in times.read_text().splitlines())
        print(f"cold build: {cold:.0f} s in all; " + ", ".join(f"{k} {float(v):.0f} s" for k, v in parts.items()))
        print(f"warm build: {warm:.1f} s (warm/cold {warm / cold:.3f})")
        for ref in refs:
            print(f"{ref}: {size(home, ref) / 1e6:.0f} MB")
        env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(home / ".cache/olivekube/containers/storage.conf")}
        subprocess.run(["podman", "rmi", "-a", "-f"], env=env, capture_output=True)  # unmounts the layers
    _, here = build(Path.home(), Path(os.devnull))
    print(f"warm build against ~/.cache: {here:.1f} s")


if __name__ == "__main__":
    main()
