import type { BackendView } from "../pool/pool.ts";

/** What changed between two routable lists. */
export interface RoutableDiff {
  /** Backends only in the old list (their old views). */
  readonly removed: BackendView[];
  /** Backends only in the new list. */
  readonly added: BackendView[];
  /** Backends in both under a new view object (a new weight, or a copy made for another thread): previous[k] became renewed[k]. */
  readonly previous: BackendView[];
  readonly renewed: BackendView[];
}

/**
 * Finds what changed from `old` to `next` in one linear walk, so a picker can patch its
 * state instead of rebuilding it. The pool reuses a backend's view object until its
 * weight changes and keeps its backends in one order (routable lists are subsequences of
 * it), so for the usual change almost every step is one reference comparison and the
 * backend objects themselves are not even read. Views copied across threads are new
 * objects every time: they are matched by slot and key, still in one walk.
 *
 * `held(view)` says whether the picker has that backend now; it steers the walk where the
 * lists differ (is the new entry a newcomer, or did the old entry leave?). A wrong answer
 * costs nothing but precision: every old entry ends up matched or removed, every new one
 * matched or added, so a backend may at worst be reported as removed and added again.
 * Callers apply removals before additions for that reason.
 *
 * Returns null as soon as more than `limit` backends were removed or added: the caller
 * then rebuilds from `next`, which is cheaper than patching most of the set.
 */
export function diffRoutable(
  old: readonly BackendView[],
  next: readonly BackendView[],
  held: (view: BackendView) => boolean,
  limit = Infinity,
): RoutableDiff | null {
  const diff: RoutableDiff = { removed: [], added: [], previous: [], renewed: [] };
  let i = 0;
  let j = 0;
  while (i < old.length && j < next.length) {
    const a = old[i]!;
    const b = next[j]!;
    if (a === b) {
      i++;
      j++;
      continue;
    }
    if (a.slot === b.slot && a.key === b.key) {
      diff.previous.push(a);
      diff.renewed.push(b);
      i++;
      j++;
      continue;
    }
    // The pool keeps one order, so if `b` is held, `a` (listed before it) has left.
    if (held(b)) {
      diff.removed.push(a);
      i++;
    } else {
      diff.added.push(b);
      j++;
    }
    if (diff.removed.length + diff.added.length > limit) return null;
  }
  if (diff.removed.length + diff.added.length + (old.length - i) + (next.length - j) > limit) return null;
  for (; i < old.length; i++) diff.removed.push(old[i]!);
  for (; j < next.length; j++) diff.added.push(next[j]!);
  return diff;
}
