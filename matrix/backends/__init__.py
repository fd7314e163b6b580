"""The backends a cell runs on: docker (engine, dockerfile) and venv (interpreters)."""
