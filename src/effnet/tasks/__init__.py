"""One thin module per user command (each offers ``DESCRIPTION``, ``add_arguments`` and ``run``):
parse the options, call the library, print. Commands never import each other: what two of
them share lives a floor below (``effnet.options``, ``runtime``, ``deploy``, ``data``)."""
