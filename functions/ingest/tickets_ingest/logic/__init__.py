"""Business steps: apply one file, sync a dataset, report status. Called by every handler."""
