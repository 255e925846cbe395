"""FLOPs and memory of a compiled XLA computation, read from its analyses (no run needed)."""


def compiled_cost(compiled, key: str = "flops") -> float:
  """One figure of XLA's `cost_analysis`: FLOPs by default, or e.g. "bytes accessed"."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get(key, float("nan")))


def compiled_figures(compiled) -> dict:
  """GFLOPs and memory (GB) of a compiled computation, from XLA's analyses (no run needed)."""
  mem = compiled.memory_analysis()
  return dict(
      gflops_per_update=compiled_cost(compiled) / 1e9,
      # XLA's estimate of the memory traffic: every op's operands and outputs, in GB.
      gbytes_accessed_per_update=compiled_cost(compiled, "bytes accessed") / 1e9,
      memory_gb=dict(
          arguments=mem.argument_size_in_bytes / 1e9, outputs=mem.output_size_in_bytes / 1e9,
          temporaries=mem.temp_size_in_bytes / 1e9,
          total=(mem.argument_size_in_bytes + mem.output_size_in_bytes
                 + mem.temp_size_in_bytes - mem.alias_size_in_bytes) / 1e9))
