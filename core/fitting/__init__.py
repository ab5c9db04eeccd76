"""Fitting: the batched Gauss-Newton solver, its residual blocks (landmarks, photometric, priors),
the landmark geometry of a face model, and the fitters built on them (landmarks, shading)."""
