"""The sync: fetch → validate → store for every registered key, every key of their
accounts and a year of history, each subject whole or absent; and its steps.

``run`` (one run and its steps on a thread pool; the sync lock), ``fetch`` (one subject's
answers), ``writes`` (storing them: group commits, answers held back), ``catalogue`` (which
keys of an account to fetch; linking registered ordinary keys), ``history`` (a year from
``/analytics/query``), ``reconcile`` (analytics against the stored rows), ``summary`` (what a
run did, and its progress).
"""
