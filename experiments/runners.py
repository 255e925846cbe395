"""The compiled update, or one model part's gradient, with a function that runs it once: what
`profile_ops` profiles, `cycles_by_library` samples and `compare_revisions` times by turns."""
import jax

from experiments.benchmark_train import (UpdateLoop, collection_runner, lower_update,
                                         package_modules)
from experiments.model_parts import compiled_gradient, model_parts


def compiled_runner(config, part: str | None = None, package: str = "vonet_jax"):
  """(compiled executable, () -> its outputs). part None: the update at the config's shapes, each
  run on the state the last one left (`benchmark_train.UpdateLoop`); "collection": one replay
  collection iteration (`benchmark_train.collection_runner`) with fresh variables; otherwise the
  gradient of `model_parts(config)[part]` w.r.t. its parameters, always at the same parameters.
  `package`: whose modules (`compare_revisions`' copy of another revision)."""
  if part == "collection":
    sharding, train_step = package_modules(package, "sharding", "train_step")
    mesh = sharding.make_mesh()
    variables = sharding.replicate(mesh, train_step.init_variables(config, jax.random.key(0)))
    return collection_runner(config, mesh, variables, package)
  if part is None:
    setup = lower_update(config, package)
    compiled = setup.lowered.compile()
    loop = UpdateLoop(setup)
    return compiled, lambda: loop(compiled)
  module, args, kwargs = model_parts(config, package)[part]
  compiled, variables = compiled_gradient(config, module, args, kwargs)
  return compiled, lambda: compiled(variables)
