"""pad_to_multiple / crop_to round-trip in 2D and 3D."""

import torch

from mambaseg.layers import crop_to, pad_to_multiple


def test_pad_then_crop_round_trips_2d_and_3d():
    for shape in [(2, 3, 37, 45), (1, 2, 17, 20, 23), (1, 1, 32, 64)]:
        x = torch.randn(shape)
        padded, spatial = pad_to_multiple(x, 8)
        assert all(s % 8 == 0 for s in padded.shape[2:]) and spatial == shape[2:]
        assert torch.equal(crop_to(padded, spatial), x)
        if all(s % 8 == 0 for s in shape[2:]):
            assert padded is x  # no copy when nothing is needed
    x = torch.arange(3.0).view(1, 1, 1, 3)
    padded, _ = pad_to_multiple(x, 4)  # replicate: the last column repeats
    assert padded[0, 0, 0].tolist() == [0.0, 1.0, 2.0, 2.0]
