"""FLOPs and memory of a compiled XLA computation, read from its analyses (no run needed)."""


def compiled_flops(compiled) -> float:
  """XLA's `cost_analysis` FLOPs of a compiled computation."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def compiled_figures(compiled) -> dict:
  """GFLOPs and memory (GB) of a compiled computation, from XLA's analyses (no run needed)."""
  mem = compiled.memory_analysis()
  return dict(
      gflops_per_update=compiled_flops(compiled) / 1e9,
      memory_gb=dict(
          arguments=mem.argument_size_in_bytes / 1e9, outputs=mem.output_size_in_bytes / 1e9,
          temporaries=mem.temp_size_in_bytes / 1e9,
          total=(mem.argument_size_in_bytes + mem.output_size_in_bytes
                 + mem.temp_size_in_bytes - mem.alias_size_in_bytes) / 1e9))
