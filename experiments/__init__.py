"""What an experiment does, in one process with no Ray."""
