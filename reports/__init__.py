"""Statistics, tables, figures and markdown reports, from the run store alone."""
