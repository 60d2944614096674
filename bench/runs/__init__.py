"""Many runs: the grid runner, the process pool, live progress, searches, a search's final
grid, and `ablate --until-decided`."""
