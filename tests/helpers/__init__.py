"""Helpers shared by the test folders: manifests, processes, models, the operator, Azure ML."""
