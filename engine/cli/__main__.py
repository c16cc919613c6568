"""`python -m cadenza.engine.cli ...`: the same as the `cadenza` command."""
import sys

from . import main

sys.exit(main())
