"""``python -m natlangchain_migrate``: the same as the ``natlangchain-migrate`` command."""

import sys

from natlangchain_migrate.entry import main

sys.exit(main())
