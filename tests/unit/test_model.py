import pytest
import torch

from vae_cats.model import LOGVAR_RANGE, ConvVAE, GroupNormSiLU

SMALL = {"latent_dim": 16, "hidden_channels": [8, 16, 16, 32]}


@pytest.fixture
def net() -> ConvVAE:
    torch.manual_seed(0)
    return ConvVAE(**SMALL)


def test_encode_decode_shapes_and_range(net: ConvVAE) -> None:
    x = torch.rand(5, 3, 64, 64)
    mu, logvar = net.encode(x)
    assert mu.shape == logvar.shape == (5, 16)
    recon = net.decode(mu)
    assert recon.shape == x.shape
    assert recon.min() >= 0 and recon.max() <= 1


def test_forward_loss_is_finite_and_gradients_reach_every_parameter(net: ConvVAE) -> None:
    x = torch.rand(4, 3, 64, 64)
    loss = net.loss_function(x, net(x), beta=1e-3)
    assert all(torch.isfinite(part) for part in loss)
    loss.loss.backward()
    missing = [
        n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert missing == []


def test_loss_is_recon_plus_beta_kl(net: ConvVAE) -> None:
    x = torch.rand(2, 3, 64, 64)
    out = net(x)
    loss = net.loss_function(x, out, beta=0.5)
    assert loss.loss.item() == pytest.approx(
        loss.recon_loss.item() + 0.5 * loss.kl.item(), rel=1e-5
    )


def test_residual_variant_has_the_same_interface() -> None:
    net = ConvVAE(**SMALL, residual=True)
    assert net(torch.rand(2, 3, 64, 64)).recon.shape == (2, 3, 64, 64)


def test_conv_bottleneck_codes_are_flat_and_each_depends_on_its_region() -> None:
    torch.manual_seed(0)
    net = ConvVAE(**SMALL, bottleneck="conv").eval()  # z: 1 channel on the 4x4 grid
    x = torch.rand(2, 3, 64, 64)
    mu, logvar = net.encode(x)
    assert mu.shape == logvar.shape == (2, 16)
    assert net.decode(mu).shape == (2, 3, 64, 64)
    changed = x.clone()
    changed[:, :, :16, :16] = 1.0 - changed[:, :, :16, :16]  # top-left quarter-side corner
    delta = (net.encode(changed)[0] - mu).abs().view(2, 4, 4)
    # The corner's codes see it through their receptive field; the far corner's codes only
    # through GroupNorm's per-image statistics.
    assert delta[:, 0, 0].min() > 5 * delta[:, 3, 3].max()
    assert sum(p.numel() for p in net.parameters()) < sum(
        p.numel() for p in ConvVAE(**SMALL).parameters()
    )


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_group_norm_silu_equals_group_norm_then_silu_in_the_input_layout(
    memory_format: torch.memory_format,
) -> None:
    torch.manual_seed(0)
    fused = GroupNormSiLU(4, 16)
    reference = torch.nn.GroupNorm(4, 16)
    reference.load_state_dict(fused.state_dict())
    x = torch.randn(3, 16, 8, 8).contiguous(memory_format=memory_format)
    out = fused(x)
    assert out.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(out, torch.nn.functional.silu(reference(x)))


def test_sample_is_reproducible_with_a_generator(net: ConvVAE) -> None:
    a = net.sample(3, generator=torch.Generator().manual_seed(7))
    b = net.sample(3, generator=torch.Generator().manual_seed(7))
    assert a.shape == (3, 3, 64, 64) and torch.equal(a, b)


def test_reconstruct_is_deterministic(net: ConvVAE) -> None:
    x = torch.rand(2, 3, 64, 64)
    net.eval()
    assert torch.equal(net.reconstruct(x), net.reconstruct(x))


def test_interpolate_ends_at_the_reconstructions(net: ConvVAE) -> None:
    net.eval()
    a, b = torch.rand(3, 64, 64), torch.rand(3, 64, 64)
    path = net.interpolate(a, b, steps=5)
    assert path.shape == (5, 3, 64, 64)
    ends = net.reconstruct(torch.stack([a, b]))
    assert torch.allclose(path[0], ends[0], atol=1e-5) and torch.allclose(
        path[-1], ends[1], atol=1e-5
    )


def test_interpolate_refuses_fewer_than_two_steps(net: ConvVAE) -> None:
    with pytest.raises(ValueError, match="steps"):
        net.interpolate(torch.rand(3, 64, 64), torch.rand(3, 64, 64), steps=1)


def test_reparameterize_has_the_posterior_moments() -> None:
    torch.manual_seed(0)
    mu = torch.full((200_000, 1), 2.0)
    logvar = torch.full((200_000, 1), float(torch.log(torch.tensor(0.25))))
    z = ConvVAE.reparameterize(mu, logvar)
    assert z.mean().item() == pytest.approx(2.0, abs=0.01)
    assert z.std().item() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"latent_dim": -4}, "latent_dim"),
        ({"beta": -1.0}, "beta"),
        ({"image_size": 60}, "image_size"),
        ({"hidden_channels": []}, "hidden_channels"),
        ({"l1_weight": -0.1}, "l1_weight"),
        ({"encoder_dropout": 1.0}, "encoder_dropout"),
        ({"free_bits": -0.5}, "free_bits"),
        ({"bottleneck": "attention"}, "bottleneck"),
        ({"bottleneck": "conv", "latent_dim": 40}, "latent_dim must be a multiple of 16"),
    ],
)
def test_impossible_settings_are_refused_naming_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        ConvVAE(**kwargs)


@pytest.mark.parametrize("bias", [100.0, -100.0])
def test_a_runaway_logvar_head_is_clamped_to_a_finite_kl_and_loss(
    net: ConvVAE, bias: float
) -> None:
    with torch.no_grad():
        net.fc_logvar.bias.fill_(bias)
    x = torch.rand(4, 3, 64, 64)
    out = net(x)
    assert out.logvar.min() >= LOGVAR_RANGE[0] and out.logvar.max() <= LOGVAR_RANGE[1]
    loss = net.loss_function(x, out, beta=1e-3)
    assert all(torch.isfinite(part) for part in loss)
    assert torch.isfinite(out.z).all() and torch.isfinite(out.recon).all()


def test_without_dropout_the_encoder_has_no_dropout_layer_and_the_same_weights(
    net: ConvVAE,
) -> None:
    with_dropout = ConvVAE(**SMALL, encoder_dropout=0.3)
    assert not any(isinstance(m, torch.nn.Dropout) for m in net.modules())
    assert list(with_dropout.state_dict()) == list(net.state_dict())
    with_dropout.load_state_dict(net.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with_dropout.train()
    assert not torch.equal(with_dropout.encode(x)[0], net.encode(x)[0])
    with_dropout.eval()
    net.eval()
    assert torch.equal(with_dropout.encode(x)[0], net.encode(x)[0])


def test_free_bits_floor_the_kl_in_the_loss_but_not_the_reported_kl(net: ConvVAE) -> None:
    x = torch.rand(4, 3, 64, 64)
    torch.manual_seed(1)
    plain = net.loss_function(x, net(x), beta=1.0)
    floored = ConvVAE(**SMALL, free_bits=1e3)
    floored.load_state_dict(net.state_dict())
    torch.manual_seed(1)
    loss = floored.loss_function(x, floored(x), beta=1.0)
    assert torch.equal(loss.kl, plain.kl) and torch.equal(loss.recon_loss, plain.recon_loss)
    # Every dimension's KL is under 1000 nats: the loss carries the floor, 16 x 1000.
    assert loss.loss.item() == pytest.approx(loss.recon_loss.item() + 16 * 1e3)


def test_the_loss_does_not_read_the_batch_back_but_still_checks_shapes(net: ConvVAE) -> None:
    x = torch.rand(2, 3, 64, 64)
    out = net(x)
    assert torch.isfinite(net.loss_function(x * 255, out, 1e-3).loss)  # checked at data entry
    with pytest.raises(ValueError, match="shape"):
        net.loss_function(x[:, :, :32], out, 1e-3)
