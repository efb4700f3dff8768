/** No group: an empty node of the tree. */
const NONE = -1;

/**
 * The best of a few groups by a two-part key, kept in a tournament tree: node k (1 is the
 * root) holds the better group of its subtree, so the best is read at the root in O(1),
 * and a group whose key changed replays its one path, O(log G). least_connections keys
 * each weight group by (its lowest count / weight, when the backend at the head of that
 * count arrived there): a lower ratio wins, then the earlier arrival.
 *
 * Groups are numbered 0, 1, …; the tree widens (rebuilt, O(G)) when room is needed for
 * more groups (ensure), which with weights of 1-1000 happens at most ten times.
 */
export class GroupTournament {
  /** Group g's own node is base + g. */
  private base = 1;
  private tree = new Int32Array(2).fill(NONE);
  /** Each group's key, valid while the group is in the tree. */
  private ratio = new Float64Array(1);
  private first = new Float64Array(1);

  /** The group with the lowest (ratio, first); NONE when no group is in. */
  best(): number {
    return this.tree[1]!;
  }

  /** Room for groups 0 … groups−1 (before set is called for them). */
  ensure(groups: number): void {
    if (groups > this.base) this.widen(groups);
  }

  /** Puts group g in with this key, or gives it this key (g below what ensure made room for). */
  set(g: number, ratio: number, first: number): void {
    this.ratio[g] = ratio;
    this.first[g] = first;
    this.replay(g, g);
  }

  /** Takes group g out (it has no members). */
  remove(g: number): void {
    if (g < this.base) this.replay(g, NONE);
  }

  /**
   * Sets group g's own node and replays its path. Stops at the first node whose winner is
   * another group before and after (every other path is up to date, so nothing above it
   * changes).
   */
  private replay(g: number, entry: number): void {
    const t = this.tree;
    let node = this.base + g;
    t[node] = entry;
    for (node >>>= 1; node >= 1; node >>>= 1) {
      const was = t[node]!;
      const now = this.better(t[2 * node]!, t[2 * node + 1]!);
      t[node] = now;
      if (was !== g && now !== g) return;
    }
  }

  /** The better of two groups (NONE is worse than any): lower ratio, then earlier first. */
  private better(a: number, b: number): number {
    if (a < 0) return b;
    if (b < 0) return a;
    const ra = this.ratio[a]!;
    const rb = this.ratio[b]!;
    if (ra !== rb) return ra < rb ? a : b;
    return this.first[a]! <= this.first[b]! ? a : b;
  }

  /** Room for `groups` groups: the keys copied, the tree rebuilt from the groups in it. */
  private widen(groups: number): void {
    let base = this.base;
    while (base < groups) base *= 2;
    const ratio = new Float64Array(base);
    ratio.set(this.ratio);
    const first = new Float64Array(base);
    first.set(this.first);
    const tree = new Int32Array(2 * base).fill(NONE);
    tree.set(this.tree.subarray(this.base, 2 * this.base), base);
    this.ratio = ratio;
    this.first = first;
    this.base = base;
    this.tree = tree;
    for (let node = base - 1; node >= 1; node--) tree[node] = this.better(tree[2 * node]!, tree[2 * node + 1]!);
  }
}
