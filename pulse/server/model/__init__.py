"""The model: task records as the server reads them (store, listing, groups, overview, task JSON)."""
