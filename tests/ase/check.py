"""Reads .xyz files the client wrote with ASE and compares them with the .npz files of
the same rollouts: python check.py SPECIES (XYZ NPZ)... Exits non-zero on any mismatch."""

import sys

import ase.io
import numpy as np

species = sys.argv[1]
pairs = sys.argv[2:]
assert pairs and len(pairs) % 2 == 0, "pairs of .xyz and .npz files"
for xyz, npz in zip(pairs[::2], pairs[1::2]):
    frames = ase.io.read(xyz, index=":")
    expected = np.load(npz)["arr"]
    # [frames, 12, 3] for one system, [frames, B, 12, 3] for an ensemble.
    expected = expected.reshape(expected.shape[0], -1, 3)
    assert len(frames) == expected.shape[0], (xyz, len(frames), expected.shape)
    for step, (atoms, want) in enumerate(zip(frames, expected)):
        np.testing.assert_allclose(atoms.get_positions(), want, rtol=0, atol=1e-6, err_msg=f"{xyz} frame {step}")
        assert set(atoms.get_chemical_symbols()) == {species}, (xyz, set(atoms.get_chemical_symbols()))
        members = len(want) // 12
        assert list(atoms.arrays["particle"]) == list(range(12)) * members, (xyz, atoms.arrays["particle"])
        if members > 1:
            assert list(atoms.arrays["member"]) == [m for m in range(members) for _ in range(12)], (xyz, atoms.arrays["member"])
print(f"ASE read {len(pairs) // 2} files")
