"""Face-recognition zoo: one wrapper, one registry."""
