"""Real photos: face detection, alignment, protection and paste-back (``protect`` / ``erase`` / ``data prepare``)."""
