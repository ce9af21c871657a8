"""The operator: reconciles OptimizationWorkflows into one Job per pass and keeps their status."""
