"""The core layer: settings, database, models, the error family, the queue, paths, locks and
the migration runner. It imports nothing of the features or the entry points."""
