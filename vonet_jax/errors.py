"""The one exception type for bad user input.

Anything a user can get wrong (a missing dataset, a bad config value, a mismatched checkpoint)
raises `UserError` with a one-line message naming the problem and the fix; `vonet_jax.main`
prints it without a traceback and exits with status 2.
"""


class UserError(Exception):
  """Bad input from the user: the message is one line naming the problem and the fix."""
