import sys

from induction.cli import main

sys.exit(main())
