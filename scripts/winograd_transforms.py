#!/usr/bin/env python3
"""Prints the Winograd transforms of F(m, r) for the given finite points (plus the point at
infinity), as the Rust lines of src/tensor/winograd/transforms.rs.

Usage: python3 scripts/winograd_transforms.py M R POINTS
  e.g. python3 scripts/winograd_transforms.py 3 5 0,1,-1,2,-2,1/2   (F(3×3, 5×5))
       python3 scripts/winograd_transforms.py 4 3 0,1,-1,2,-2       (F(4×4, 3×3): the known matrices)

Construction (Lavin & Gray 2016; the `wincnn` one): Aᵀ has rows p^j (j < m), G has rows
p^j / Π(p − q) (j < r), the point ∞ takes the top coefficient; Bᵀ is then the exact rational
solution of Aᵀ[(G g) ⊙ (Bᵀ d)] = g ⋆ d for all d and g, checked on random integers.
Needs sympy (pip install sympy; PyTorch installs it).
"""
import random
import sys

import sympy as sp


def matrices(points, m, r):
    a = len(points) + 1
    at, g = sp.zeros(m, a), sp.zeros(a, r)
    for i, p in enumerate(points):
        norm = sp.prod([p - q for k, q in enumerate(points) if k != i])
        for j in range(m):
            at[j, i] = p**j
        for j in range(r):
            g[i, j] = p**j / norm
    at[m - 1, a - 1] = 1
    g[a - 1, r - 1] = 1
    bt = sp.Matrix(a, a, lambda i, j: sp.Symbol(f"b{i}_{j}"))
    eqs = [sum(at[i, x] * g[x, j] * bt[x, k] for x in range(a)) - (1 if k == i + j else 0)
           for i in range(m) for j in range(r) for k in range(a)]
    bt = bt.subs(sp.solve(eqs, list(bt), dict=True)[0])
    assert not bt.free_symbols, "the points do not determine Bᵀ"
    return at, g, bt


def check(at, g, bt, m, r):
    a = at.shape[1]
    d = sp.Matrix([sp.Rational(random.randint(-9, 9)) for _ in range(a)])
    w = sp.Matrix([sp.Rational(random.randint(-9, 9)) for _ in range(r)])
    y = at * ((g * w).multiply_elementwise(bt * d))
    assert y == sp.Matrix([sum(d[i + j] * w[j] for j in range(r)) for i in range(m)])


def term(c, v):
    sign, c = ("-" if c < 0 else "+"), abs(c)
    if c == 1:
        return f"{sign} {v}"
    if c.q == 1:
        return f"{sign} {float(c.p):.1f} * {v}"
    if c.p == 1:
        return f"{sign} {v} / {float(c.q):.1f}"
    return f"{sign} {float(c.p):.1f} * {v} / {float(c.q):.1f}"


def rust_lines(mat, var):
    out = []
    for i in range(mat.shape[0]):
        e = " ".join(term(mat[i, j], f"{var}{j}") for j in range(mat.shape[1]) if mat[i, j] != 0)
        out.append(f"r[{i}][l] = {e[2:] if e.startswith('+ ') else '-' + e[2:]};")
    return "\n".join(out)


def main():
    m, r = int(sys.argv[1]), int(sys.argv[2])
    points = [sp.Rational(x) for x in sys.argv[3].split(",")]
    at, g, bt = matrices(points, m, r)
    for _ in range(5):
        check(at, g, bt, m, r)
    print("Aᵀ", at, "\nG", g, "\nBᵀ", bt)
    print("\ninput_1d (Bᵀ d):\n" + rust_lines(bt, "d"))
    print("\nweight_1d (G g):\n" + rust_lines(g, "g"))
    print("\noutput_1d (Aᵀ m):\n" + rust_lines(at, "m"))
    print("\ndy_1d (A d):\n" + rust_lines(at.T, "d"))
    print("\nweight_grad_1d (Gᵀ m):\n" + rust_lines(g.T, "m"))


if __name__ == "__main__":
    main()
