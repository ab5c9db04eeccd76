"""Files in and out: images, meshes, videos (read and written streaming), ``tracking.npz``."""
