"""Data sets: the synthetic mini-world, CelebA-HQ, FFHQ, image folders."""
