"""`python -m sslbench.bench.cli`: the `sslbench` command."""

import sys

from sslbench.bench.cli.main import main

sys.exit(main())
