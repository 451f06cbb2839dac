"""One module per user task (each command module offers ``DESCRIPTION``, ``add_arguments``
and ``run``), plus what commands share: ``arguments`` (common options), ``triton`` (the
model-repository writer export uses) and ``training/`` (the loop behind ``effnet train``)."""
