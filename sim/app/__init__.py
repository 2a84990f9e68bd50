"""The web app of ``iopsim app``: :mod:`iopsim.app.logic` (drafts, checks, jobs; no Streamlit) and
``main.py``, the Streamlit script that lays out its pages."""
