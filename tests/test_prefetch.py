"""Tests of vonet_jax/data/prefetch.py: items read ahead in a thread, in order, errors passed on."""
import gc
import threading
import time

import pytest

from vonet_jax.data.prefetch import Prefetcher
from vonet_jax.errors import UserError


class CountingSource:
  """0, 1, ..., n-1 (endless if n is None), counting what was read; raises `error` at `fail_at`."""

  def __init__(self, n=None, fail_at=None, error=None):
    self.n, self.fail_at, self.error = n, fail_at, error
    self.read = 0

  def __iter__(self):
    return self

  def __next__(self):
    if self.read == self.fail_at:
      raise self.error
    if self.n is not None and self.read >= self.n:
      raise StopIteration
    self.read += 1
    return self.read - 1


def wait_until(condition, timeout_s=5.0):
  end = time.monotonic() + timeout_s
  while not condition() and time.monotonic() < end:
    time.sleep(0.01)
  return condition()


def prefetch_threads():
  return [t for t in threading.enumerate() if t.name == "test prefetch"]


def test_yields_the_items_in_order_then_stops():
  items = Prefetcher(CountingSource(n=7), depth=3, name="test prefetch")
  assert list(items) == list(range(7))
  assert next(items, "end") == "end"


def test_reads_depth_items_ahead_without_being_asked():
  source = CountingSource()
  items = Prefetcher(source, depth=4, name="test prefetch")
  # depth items queued, one more read and waiting for room; then no further reads.
  assert wait_until(lambda: source.read == 5)
  time.sleep(0.3)
  assert source.read == 5
  assert next(items) == 0
  assert wait_until(lambda: source.read == 6)
  items.close()


def test_counts_the_time_next_waited_for_a_slow_source():
  class Slow(CountingSource):
    def __next__(self):
      time.sleep(0.2)
      return super().__next__()

  source = Slow()
  items = Prefetcher(source, depth=1, name="test prefetch")
  next(items)  # read after 0.2 s
  assert 0.15 < items.waited_s < 1.0
  assert wait_until(lambda: source.read == 3)  # item 1 queued, item 2 waiting for room
  before = items.waited_s
  next(items)
  assert items.waited_s - before < 0.1
  items.close()


def test_the_sources_error_is_raised_by_next_with_its_type_after_the_items_before_it():
  items = Prefetcher(CountingSource(fail_at=2, error=UserError("bad record: fix it")), depth=2,
                     name="test prefetch")
  assert [next(items), next(items)] == [0, 1]
  with pytest.raises(UserError, match="bad record"):
    next(items)
  assert next(items, "end") == "end"


def test_close_and_garbage_collection_stop_the_thread():
  items = Prefetcher(CountingSource(), depth=2, name="test prefetch")
  assert wait_until(lambda: len(prefetch_threads()) == 1)
  items.close()
  assert not prefetch_threads()
  assert next(items, "end") == "end"

  Prefetcher(CountingSource(), depth=2, name="test prefetch")  # dropped at once
  gc.collect()
  assert wait_until(lambda: not prefetch_threads())


def test_rejects_a_depth_below_one():
  with pytest.raises(ValueError, match="depth must be >= 1"):
    Prefetcher(CountingSource(), depth=0)
