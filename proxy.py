"""Start jupyter-dev-proxy: ``python3 proxy.py --help`` lists the settings."""

import sys

from jupyter_dev_proxy.cli import main

if __name__ == "__main__":
    sys.exit(main())
