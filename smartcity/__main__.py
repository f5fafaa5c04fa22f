"""``python -m smartcity``: the ``smartcity`` command without the installed script."""

import sys

from smartcity.cli import main

if __name__ == "__main__":
    sys.exit(main())
