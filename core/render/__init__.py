"""Rendering on the CPU: z-buffer rasterization into fragments (compiled kernel + NumPy twin),
vertex visibility, and shaders that turn fragments into images."""
