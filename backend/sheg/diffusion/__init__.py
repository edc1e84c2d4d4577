"""Gaussian diffusion: the noise schedule, the training loss, and samplers that take any denoiser."""
