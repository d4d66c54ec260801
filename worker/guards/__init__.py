"""Guards: spend limits that act. Declared ``[[limits]]`` made true at OpenRouter (plan,
apply), alert rules that disable or cap a key, dry-run by default, undone, audited, once.

``accounts`` (the registered accounts, their keys as listed now, the management keys never
touched), ``limits`` (plan and apply the declared limits), ``react`` (what a poll's fired rules
and drift plan, in its transaction), ``send`` (the outbox: each planned change sent once,
undone at the next period, or by ``guards undo``), ``notes`` (what the alert says was done).
"""
