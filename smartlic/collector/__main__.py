"""``python -m smartlic.collector``: the same as the ``smartlic-collector`` command."""

from __future__ import annotations

import sys

from smartlic.collector.cli import main

sys.exit(main())
