"""HTTP serving: the FastAPI app, its dynamic batcher, the web page and metrics.

``effnet serve`` (serve/command.py) is the command; ``create_app`` builds the app for
embedding or tests.
"""
