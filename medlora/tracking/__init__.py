"""MLflow tracking: runs, params, metrics and artifacts through MLflow's own APIs."""
