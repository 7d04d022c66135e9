"""RFC 6962 / RFC 9162 Merkle tree hashing: leaf and node hashes, the compact range ("frontier")
that lets a log grow without re-reading old leaves, inclusion and consistency proofs and their
verification. Pure functions over 32-byte hashes."""

from __future__ import annotations

import hashlib


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) of leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def extend(frontier: list[bytes], size: int, leaves: list[bytes]) -> list[bytes]:
    """The frontier (roots of the perfect subtrees that make up a tree of ``size`` leaves, largest
    first) after appending ``leaves``."""
    stack = list(frontier)
    for leaf in leaves:
        stack.append(leaf)
        size += 1
        merges = (size & -size).bit_length() - 1  # trailing zeros: equal-sized subtrees to merge
        for _ in range(merges):
            right = stack.pop()
            stack.append(node_hash(stack.pop(), right))
    return stack


def frontier_root(frontier: list[bytes]) -> bytes:
    """The tree's root from its frontier (the subtrees hashed right to left)."""
    if not frontier:
        return EMPTY_ROOT
    value = frontier[-1]
    for left in reversed(frontier[:-1]):
        value = node_hash(left, value)
    return value


def inclusion_proof(index: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf ``index``."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), root(leaves[:k])]


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], expected_root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, value = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            value = node_hash(sibling, value)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            value = node_hash(value, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and value == expected_root


def consistency_proof(old_size: int, leaves: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m <= n."""

    def subproof(m: int, part: list[bytes], complete: bool) -> list[bytes]:
        n = len(part)
        if m == n:
            return [] if complete else [root(part)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, part[:k], complete), root(part[k:])]
        return [*subproof(m - k, part[k:], False), root(part[:k])]

    return subproof(old_size, leaves, True)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2."""
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0 or old_size > new_size or not proof:
        return False
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        proof = [old_root, *proof]
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root
