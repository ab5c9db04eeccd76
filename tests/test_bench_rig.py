"""bench_rig's frame orders for the identity measure's spread (`--identity-orders`)."""
import benchmarks.bench_rig as bench_rig


def test_identity_orders_are_distinct_repeatable_permutations():
    """Each order is a permutation of the set (no frame lost or doubled), the first three are the set
    as given, reversed and rotated by one, the shuffles differ from each other and come out the same
    every time (seeded), and asking for K gives K."""
    frames = list(range(8))
    orders = bench_rig._orders(7)
    assert [name for name, _ in orders][:3] == ["as given", "reversed", "rotated by one"]
    seen = [tuple(order(frames)) for _, order in orders]
    assert all(sorted(s) == frames for s in seen) and len(set(seen)) == 7
    assert seen[:3] == [tuple(frames), tuple(frames[::-1]), tuple(frames[1:] + frames[:1])]
    assert [tuple(order(frames)) for _, order in bench_rig._orders(7)] == seen
    assert len(bench_rig._orders(2)) == 2 and len(bench_rig._orders(1)) == 1
