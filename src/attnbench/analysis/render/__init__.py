"""One renderer per output: console table, markdown, CSV, plots (of a pivot: attnbench.analysis.pivot), and
the comparison of two sweeps (attnbench.analysis.compare)."""
