"""`python -m tailfast`: the same as the `tailfast` command."""

import sys

from tailfast.cli import main

sys.exit(main())
