"""The service's side of the live loop (issue 9; README "Learning from live traffic").

- :mod:`~app.live.writer`: bounded queue + background writer into the store, off the request path.
- :mod:`~app.live.hook`: what the chat handler calls once an answer has gone back.
- :mod:`~app.live.shadow`, :mod:`~app.live.budget`, :mod:`~app.live.judge`: shadow sampling
  graded by an LLM judge or a user grader, under USD-per-day and per-minute caps.
- :mod:`~app.live.loop`: builds the above from the settings (``LiveLoop``).
- :mod:`~app.live.metrics`: the ``dars_live_*``, ``dars_feedback_*``, ``dars_shadow_*`` metrics.

Nothing is imported here, so ``app.metrics`` can import the metrics module alone.
"""
