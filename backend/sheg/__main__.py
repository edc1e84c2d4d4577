import sys

from sheg.cli import main

sys.exit(main())
