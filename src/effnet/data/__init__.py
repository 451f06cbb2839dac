"""Images in, arrays out: decoding, preprocessing, labels (numpy/Pillow only for inference)."""
