"""`python -m tui_lm` (and `torchrun -m tui_lm`) runs the same CLI as `tui-lm`."""

import sys

from tui_lm.cli import main

sys.exit(main())
