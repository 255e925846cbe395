"""`materialize.materialize` is the identity, bit for bit, and XLA stores it rather than
recomputing it in each consumer."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vonet_jax.models.materialize import materialize


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_materialize_is_the_identity_bit_for_bit(dtype):
  x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
  x[0, :4] = [np.nan, np.inf, -np.inf, -0.0]
  x = jnp.asarray(x, dtype)
  y = jax.jit(materialize)(x)
  assert y.dtype == x.dtype
  bits = lambda v: np.asarray(v).view(np.uint16 if v.dtype == jnp.bfloat16 else np.uint32)
  np.testing.assert_array_equal(bits(y), bits(x))


@pytest.mark.parametrize("cotangent", [False, True])
def test_materialize_passes_the_cotangent_through(cotangent):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6)), jnp.float32)
  g = jnp.asarray(np.random.default_rng(1).normal(size=(4, 6)), jnp.float32)
  _, vjp = jax.vjp(lambda x: materialize(x, cotangent), x)
  np.testing.assert_array_equal(jax.jit(vjp)(g)[0], g)


def _fusions_reading_the_inputs(f, *args) -> int:
  """How many of the compiled HLO's fusions read the function's first input."""
  entry = jax.jit(f).lower(*args).compile().as_text().split("ENTRY ", 1)[1]
  first_input = re.search(r"\((\S+): ", entry).group(1)
  return sum(1 for line in entry.splitlines()
             if re.search(r" fusion\([^)]*%" + re.escape(first_input) + r"[,)]", line))


def test_xla_reads_the_materialized_array_instead_of_recomputing_it():
  # y, a chain of cheap operations of three inputs, read by two consumers: XLA fuses the chain
  # into both (each reads the inputs); materialized, y is computed once and both read it.
  rng = np.random.default_rng(0)
  a, b, c = (jnp.asarray(rng.normal(size=(4, 5, 6)), jnp.float32) for _ in range(3))

  def consumers(wrap):
    def f(a, b, c):
      y = wrap(jnp.maximum(a * b + c, 0.0))
      return y.transpose(2, 1, 0) * 2.0, jnp.sin(y)
    return f

  assert _fusions_reading_the_inputs(consumers(lambda y: y), a, b, c) == 2
  assert _fusions_reading_the_inputs(consumers(materialize), a, b, c) == 1
  for ours, plain in zip(jax.jit(consumers(materialize))(a, b, c),
                         jax.jit(consumers(lambda y: y))(a, b, c)):
    np.testing.assert_array_equal(ours, plain)
