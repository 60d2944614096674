"""Declarative grids (and, later, search spaces). Importing registers the built-in grids.

A user adds a grid by adding one module that calls `register_grid` and importing it here.
"""

from sslbench.ablations import cifar10, label_budget, methods, mnist100, precision, spaces
from sslbench.ablations.grid import Grid, Variant, get_grid, grid_names, register_grid

__all__ = ["Grid", "Variant", "cifar10", "get_grid", "grid_names", "label_budget", "methods",
           "mnist100",
           "precision", "register_grid", "spaces"]
