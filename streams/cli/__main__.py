"""``python -m streams.cli``: the ``interest-stream`` commands (workers are spawned this way)."""

import sys

from streams.cli import main

if __name__ == "__main__":
    sys.exit(main())
