"""Vision auto-tagging: normalized tags for every new image, made only while the GPU is otherwise idle."""
