"""nn.Modules and pure tensor functions: AttGAN, ErasableMask, FR zoo, noise pool."""
