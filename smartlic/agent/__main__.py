"""``python -m smartlic.agent``: the same as the ``smartlic-agent`` command."""

from __future__ import annotations

import sys

from smartlic.agent.cli import main

sys.exit(main())
