"""``python -m dmisearch``: the same as the ``dmisearch`` command."""

import sys

from dmisearch.cli import main

sys.exit(main())
