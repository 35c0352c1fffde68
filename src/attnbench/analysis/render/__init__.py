"""One renderer per output of a pivot (attnbench.analysis.pivot): console table, markdown, CSV, plots."""
