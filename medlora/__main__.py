"""``python -m medlora``: the ``medlora`` command, also as torchrun launches it
(``torchrun --nproc-per-node 2 -m medlora run CONFIG``)."""

import sys

from .cli import main

sys.exit(main())
