"""A small numeric sanity check per pinned package: imports can succeed on a broken ABI."""

import _probe


def numpy_check():
    import numpy as np
    a = np.arange(12.0).reshape(3, 4)
    assert np.allclose((a @ a.T)[0], [14.0, 38.0, 62.0]), "matmul gave a wrong result"
    m = np.array([[3.0, 1.0], [1.0, 2.0]])
    assert np.allclose(np.linalg.solve(m, [9.0, 8.0]), [2.0, 3.0]), "linalg.solve gave a wrong result"


def scipy_check():
    import numpy as np
    from scipy import linalg, optimize, stats
    from scipy.spatial import cKDTree
    assert abs(stats.norm.cdf(0.0) - 0.5) < 1e-12, "stats.norm.cdf(0) != 0.5"
    assert np.allclose(linalg.inv([[2.0, 0.0], [0.0, 4.0]]), [[0.5, 0.0], [0.0, 0.25]]), "linalg.inv wrong"
    found = optimize.minimize_scalar(lambda x: (x - 2.0) ** 2)
    assert abs(found.x - 2.0) < 1e-6, "minimize_scalar missed the minimum"
    tree = cKDTree(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    distance, index = tree.query([0.9, 0.9])
    assert index == 1 and abs(distance - 0.1414213562) < 1e-6, "cKDTree.query wrong"


def torch_check():
    import torch
    x = torch.ones(3, 3)
    assert float((x @ x).sum()) == 27.0, "torch matmul gave a wrong result"


CHECKS = {"numpy": numpy_check, "scipy": scipy_check, "torch": torch_check}


def main():
    pins = _probe.pins()
    _probe.run([(name, CHECKS[name]) for name in sorted(pins) if name in CHECKS])


if __name__ == "__main__":
    main()
