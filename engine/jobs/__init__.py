"""Jobs: the runner, the generation handlers, their typed payloads, source images and history records."""
