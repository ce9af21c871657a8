"""GPU check on a machine lent by the device tool: `olivekube doctor` (olivekube/doctor/checks.py), its
checks also written as JSON for the closing note. Never run in CI (no GPU there); `--device cpu` runs
the same checks on the CPU.

    python benchmarks/gpu_check.py --json $OUT/gpu_check.json [--steps 100 --hidden 1024 --layers 8]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    sys.path.insert(0, str(REPO))
    from olivekube.doctor.checks import Doctor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--steps", type=int, default=100, help="training steps of the QLoRA pass")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the checks here")
    args = parser.parse_args()
    doctor = Doctor(args.device, args.steps, args.hidden, args.layers, args.new_tokens, say=print)
    checks = doctor.run()
    print(f"\n{'check':32} {'result':12} {'seconds':>8}")
    for c in checks:
        print(f"{c.name:32} {c.state:12} {c.seconds:8.1f}")
    if args.json:
        args.json.write_text(json.dumps([c.as_json() for c in checks], indent=1))
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
