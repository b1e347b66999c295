"""Run directories: a fit's tables and files written atomically, read back, rebuilt, compared and
reported.
"""
