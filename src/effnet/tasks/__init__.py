"""One module per user task; each offers ``DESCRIPTION``, ``add_arguments`` and ``run``."""
