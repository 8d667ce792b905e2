"""``python -m subnet.data``: see :func:`subnet.data.main`."""

import sys

from subnet.data.cli import main

if __name__ == "__main__":
    sys.exit(main())
