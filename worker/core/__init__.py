"""The shared basics every layer uses: UTC days and the one date parser, errors and exit
codes, logs with secret masking, the one renderer, the usage row types, failure reasons.

``days``, ``errors``, ``logs``, ``render``, ``usage`` (a day's row for one model, what a write
did), ``outcomes`` (a key's result in a run; why it failed, as a stable code and one line).
"""
