"""``python -m benchmarks [images] [deploy]``: every benchmark when none is named.

``python -m benchmarks soak [--cycles N]`` is separate: it runs for many minutes.
"""

from __future__ import annotations

import sys

from benchmarks import deploy, images, soak

BENCHMARKS = {"images": images.main, "deploy": deploy.main}


def main(argv: list[str]) -> int:
    if argv[:1] == ["soak"]:
        soak.main(argv[1:])
        return 0
    unknown = [name for name in argv if name not in BENCHMARKS]
    if unknown:
        print(f"benchmarks: unknown {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
        return 2
    for name in argv or list(BENCHMARKS):
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
