"""``python -m optsde.cli``: the same as the ``optsde`` command."""

import sys

from optsde.cli import main

sys.exit(main())
