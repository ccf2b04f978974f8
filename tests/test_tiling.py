"""Tiling (mirnet.tiling): tile placement, blending, and the photo-wide statistics."""

import pytest
import torch

import mirnet
from mirnet.archs.mirnet_arch import GlobalAveragePool
from mirnet.device import OptionError
from mirnet.tiling import GlobalContext, check_tile, enhance_tiled, tile_starts


def test_tile_starts_cover_everything():
    assert tile_starts(100, 128, 16) == [0]
    starts = tile_starts(1000, 256, 64)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 64 for a, b in zip(starts, starts[1:]))


def test_tiles_must_be_wider_than_both_overlaps():
    check_tile(129, 64)
    with pytest.raises(OptionError, match="at least 129"):
        check_tile(128, 64)


def test_blending_a_pointwise_function_is_seamless():
    image = torch.rand(1, 3, 70, 90)
    out = enhance_tiled(lambda crop: crop * 2, image, tile=32, overlap=8)
    assert torch.allclose(out, image * 2, atol=1e-6)


def test_global_context_gives_a_tile_the_photos_pooled_statistics():
    torch.manual_seed(0)
    model = mirnet.build_model("nano").eval()
    photo = torch.rand(1, 3, 32, 48)
    pools = [m for m in model.modules() if isinstance(m, GlobalAveragePool)]
    seen: list[torch.Tensor] = []

    def capture():
        return [pool.register_forward_hook(lambda m, i, out: seen.append(out)) for pool in pools]

    with torch.no_grad():
        handles = capture()
        model(photo)
        for handle in handles:
            handle.remove()
        whole, seen = seen, []
        with GlobalContext(model) as context:
            assert all(len(pool._forward_hooks) == 1 for pool in pools)
            context.start_tile()
            model(photo)  # the record pass, with the whole photo as its only tile
            context.replay()
            handles = capture()  # after the context's hooks: sees what the network gets
            context.start_tile()
            model(photo[..., :16, :24])
            for handle in handles:
                handle.remove()
    assert not any(pool._forward_hooks for pool in pools)  # nothing left on the network
    assert len(seen) == len(whole) > len(pools)  # shared units pool once per column
    for tile_mean, photo_mean in zip(seen, whole):
        assert torch.allclose(tile_mean, photo_mean, atol=1e-6)
