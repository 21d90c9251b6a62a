"""Starting and resuming a run: run.json, presets, where log lines go, the launcher."""
