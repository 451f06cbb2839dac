"""Images in, arrays out: decoding, preprocessing, labels, labelled image sets and NV12 frames
(numpy/Pillow only, for inference); training augmentation (``augment``, kornia) and the
digits set (``digits``) import torch only there. No model code: this room stands beside them."""
