"""Entry point of the fork server process (see ``forkserver.py``)."""

import sys

from alto_langgraph.process.forkserver import main

main(*(int(a) for a in sys.argv[1:4]))
