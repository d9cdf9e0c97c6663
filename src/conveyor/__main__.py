"""Entry point for ``python -m conveyor`` and the ``conveyor`` script."""

from __future__ import annotations

import sys

from conveyor.cli import main

if __name__ == "__main__":
    sys.exit(main())
