"""Public calcium-scoring datasets into the workflow's own-data layout (`cacflow convert`)."""
