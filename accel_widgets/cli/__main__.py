"""``python -m accel_widgets.cli``: the same as the ``accel-widgets`` command."""

import sys

from accel_widgets.cli.main import main

sys.exit(main())
