import sys

from edge.cli import main

if __name__ == "__main__":  # importing edge.__main__ (a worker, a tool) must not run the CLI
    sys.exit(main())
