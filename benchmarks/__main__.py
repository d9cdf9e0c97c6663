"""``python -m benchmarks [images] [deploy]``: every benchmark when none is named.

``python -m benchmarks soak [--cycles N]`` is separate: it runs for many minutes.
``python -m benchmarks migrations [--cycles N]`` is separate too: it builds its own releases
and starts a PostgreSQL server (several minutes).
``python -m benchmarks canary`` is separate too: bad releases shipped blue-green and canary
under load, each row in its own environment (several minutes).
``python -m benchmarks swarm`` is separate too: Swarm's own rolling update on a two-node swarm
made on this machine (as root; a few minutes).
"""

from __future__ import annotations

import sys

from benchmarks import canary, deploy, images, migrations, soak, swarm

BENCHMARKS = {"images": images.main, "deploy": deploy.main}
# Each takes its own options.
SEPARATE = {
    "soak": soak.main,
    "migrations": migrations.main,
    "canary": canary.main,
    "swarm": swarm.main,
}


def main(argv: list[str]) -> int:
    if argv[:1] and argv[0] in SEPARATE:
        SEPARATE[argv[0]](argv[1:])
        return 0
    unknown = [name for name in argv if name not in BENCHMARKS]
    if unknown:
        known = [*BENCHMARKS, *SEPARATE]
        print(f"benchmarks: unknown {', '.join(unknown)} (known: {', '.join(known)})")
        return 2
    for name in argv or list(BENCHMARKS):
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
