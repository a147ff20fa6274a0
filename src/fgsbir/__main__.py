import sys

from fgsbir.cli import main

sys.exit(main())
