"""A run of the tool: settings checked, its directory, training, evaluation, resume, record."""
