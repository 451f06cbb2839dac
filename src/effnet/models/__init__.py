"""Architecture: spec (pure Python) -> network (torch)."""
