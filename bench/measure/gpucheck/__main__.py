"""`python -m sslbench.bench.measure.gpucheck`: the check, or (`--child NAME`) one section of
it in the process the check started for it."""

from sslbench.bench.measure.gpucheck.command import main

if __name__ == "__main__":
    raise SystemExit(main())
