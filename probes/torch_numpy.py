"""torch ↔ numpy interop, when torch is pinned: the bridge breaks when their ABIs disagree."""

import _probe


def roundtrip():
    import numpy as np
    import torch
    a = np.arange(6.0).reshape(2, 3)
    t = torch.from_numpy(a)
    assert t.shape == (2, 3) and float(t.sum()) == 15.0, "from_numpy gave a wrong tensor"
    back = (t * 2).numpy()
    assert isinstance(back, np.ndarray) and float(back.sum()) == 30.0, ".numpy() gave a wrong array"
    assert float(torch.tensor(np.float32(1.5))) == 1.5, "torch.tensor(np scalar) wrong"


def main():
    pins = _probe.pins()
    _probe.run([("torch<->numpy", roundtrip)] if "torch" in pins else [])


if __name__ == "__main__":
    main()
