"""A person's rig and what is done with it: deformation transfer, building it from photos,
tracking a video with it, retargeting onto another rig."""
