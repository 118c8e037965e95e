"""Runs read back as reports: the text ``runexperiment`` prints (``text``), runs side by side
(``compare``) and exports as JSON or CSV (``export``). Reads only; imports the models and the
selectors.
"""
