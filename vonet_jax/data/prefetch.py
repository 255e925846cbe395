"""Reads an iterator's items ahead in a background thread.

The training loop takes W videos at once when the replay workers' videos end together (every
num_frames / frames_per_iteration iterations at the start). Read on demand, any slowness of the
TFDS stream at that moment stops training: the B=8 runs of 2026-12-04 waited 56 s there in two
of three runs (docs/performance_history.md). `Prefetcher` keeps `depth` items ready, read in
order by one thread while the device works, so the loop only copies them.

The order of the items is the source's: resuming (which counts the items the loop took, not
those read ahead) is unchanged. An error of the source is raised by the `next` call that
reaches it, with its own type (a UserError stays a one-line error).
"""
import queue
import threading
import time
import weakref
from typing import Iterator, TypeVar

T = TypeVar("T")

_POLL_S = 0.1  # how often a thread waiting for room checks whether it should stop


class _End:
  """Queued after the source's last item."""


class _Failure:
  """Queued instead of an item when the source raised."""

  def __init__(self, error: BaseException):
    self.error = error


class Prefetcher(Iterator[T]):
  """An iterator over `source`'s items with up to `depth` of them read ahead in a thread.

  The thread starts at construction and stops at `close()`, when the Prefetcher is garbage
  collected, or at interpreter exit; it holds no reference to the Prefetcher.
  """

  def __init__(self, source: Iterator[T], depth: int, name: str = "prefetch"):
    if depth < 1:
      raise ValueError(f"Prefetcher depth must be >= 1 (got {depth})")
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._done = False
    self.waited_s = 0.0  # time `next` spent waiting for the thread, in all
    thread = threading.Thread(target=_read, args=(iter(source), self._queue, self._stop),
                              name=name, daemon=True)
    thread.start()
    self._close = weakref.finalize(self, _stop_thread, self._stop, thread)

  def __next__(self) -> T:
    if self._done or not self._close.alive:
      raise StopIteration
    start = time.perf_counter()
    item = self._queue.get()
    self.waited_s += time.perf_counter() - start
    if isinstance(item, _End):
      self._done = True
      raise StopIteration
    if isinstance(item, _Failure):
      self._done = True
      raise item.error
    return item

  def close(self) -> None:
    """Stops the thread (waiting at most a few seconds); `next` then raises StopIteration."""
    self._close()


def _read(source: Iterator, items: queue.Queue, stop: threading.Event) -> None:
  """The thread: puts source's items (then _End, or a _Failure) until `stop` is set."""
  try:
    for item in source:
      if not _put(items, item, stop):
        return
  except BaseException as error:  # pylint: disable=broad-except  (handed to the reader)
    _put(items, _Failure(error), stop)
    return
  _put(items, _End(), stop)


def _put(items: queue.Queue, item, stop: threading.Event) -> bool:
  """Waits for room; False if asked to stop first."""
  while not stop.is_set():
    try:
      items.put(item, timeout=_POLL_S)
      return True
    except queue.Full:
      pass
  return False


def _stop_thread(stop: threading.Event, thread: threading.Thread) -> None:
  stop.set()
  thread.join(timeout=10 * _POLL_S + 5.0)  # a read under way (a TFDS record) finishes first
