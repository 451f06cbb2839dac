"""Images in, arrays out: decoding, preprocessing, labels, labelled image sets and NV12 frames
(numpy/Pillow only, for inference); training augmentation (``augment``, kornia and torch) and
scikit-learn's digits (``digits``) are for training. No model code: this room stands beside
the model rooms."""
