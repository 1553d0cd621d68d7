"""A genbench model plug-in: `pixel_mixture` (genbench_example_model.mixture.PixelMixture)."""
