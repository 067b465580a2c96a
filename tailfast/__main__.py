import sys

from tailfast.cli import main

sys.exit(main())
