import pytest
import torch

import mirnet
from mirnet.archs import MIRNet, count_parameters
from mirnet.losses import EnhancementLoss


def test_list_models_and_overrides():
    names = mirnet.list_models()
    assert {"paper", "small", "tiny"} <= set(names)
    model = mirnet.build_model("tiny", features=8)
    assert model.conv_in.out_channels == 8
    with pytest.raises(ValueError, match="unknown model configuration"):
        mirnet.build_model("huge")


def test_unshared_attention_adds_a_column_of_units():
    shared = count_parameters(mirnet.build_model("nano"))
    separate = count_parameters(mirnet.build_model("nano", share_attention_across_columns=False))
    assert separate > shared


@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 3, 16, 16), (3, 1, 1), (3, 5, 2)])
def test_any_size_gives_input_shape_back(shape):
    model = mirnet.build_model("nano").eval()
    with torch.inference_mode():
        assert model(torch.rand(shape)).shape == shape


def test_full_photo_size_with_tiny():
    model = mirnet.build_model("tiny").eval()
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 400, 600)).shape == (1, 3, 400, 600)


def test_bf16_autocast_runs_close_to_fp32():
    torch.manual_seed(0)
    model = mirnet.build_model("nano").eval()
    x = torch.rand(1, 3, 32, 40)
    with torch.inference_mode():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(x).float()
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    assert (fast - ref).abs().max() < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_forward():
    model = mirnet.build_model("nano").cuda().eval()
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 37, 53, device="cuda")).shape == (1, 3, 37, 53)


def test_height_four_streams():
    model = MIRNet(features=4, num_groups=1, num_blocks=1, height=4, width=3).eval()
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 21, 30)).shape == (1, 3, 21, 30)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = mirnet.build_model("nano")
    loss_fn = EnhancementLoss(charbonnier_weight=1.0, ssim_weight=0.2)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    low = torch.rand(1, 3, 32, 32) * 0.2
    high = (low * 4).clamp(0, 1)
    losses = []
    for _ in range(15):
        loss = loss_fn(model(low), high)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses
