"""Results: run records, collection, tables, plots, comparison with the published numbers."""
