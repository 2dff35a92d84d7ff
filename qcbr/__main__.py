import sys

from qcbr.cli import main

sys.exit(main())
