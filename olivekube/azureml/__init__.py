"""Azure ML: passes hosted on an AzureML system run as Azure ML command jobs."""
