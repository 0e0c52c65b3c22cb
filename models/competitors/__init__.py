"""Networks of the generator-based competitors (AdvFaces, GMAA), ported from their official code."""
