"""minigpt.nn.config: the configs refuse bad and unknown fields by name and round-trip through dicts; num_params and
param_shapes count the model's parameters."""
import numpy as np
import pytest

import minigpt
from minigpt.nn.config import ModelConfig, TrainConfig, param_shapes
from tests.nn.helpers import CONFIGS, small


def test_configs_round_trip_through_dicts_and_refuse_unknown_fields():
    cfg, tcfg = small(attn_only=True, d_in=2), TrainConfig(steps=7, lr=3e-4)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and TrainConfig.from_dict(tcfg.to_dict()) == tcfg
    with pytest.raises(ValueError, match=r"unknown field model\.d_mdoel; did you mean model\.d_model\?"):
        ModelConfig.from_dict({"d_mdoel": 8})
    with pytest.raises(ValueError, match=r"unknown field train\.zzz; train fields: steps, batch_size"):
        TrainConfig.from_dict({"zzz": 1})
    with pytest.raises(ValueError, match="the train section must be a mapping"):
        TrainConfig.from_dict([("steps", 1)])
    with pytest.raises(ValueError, match="train.lr"):
        TrainConfig(lr=0.0)


def test_param_shapes_are_the_models_in_forward_order():
    cfg = small(d_in=3, d_out=2)
    shapes = param_shapes(cfg)
    assert {k: v.shape for k, v in minigpt.Transformer(cfg).params.items()} == shapes
    names = list(shapes)
    assert names[:2] == ["embed.W_E", "pos_embed.W_pos"] and names[-2:] == ["unembed.W_U", "unembed.b_U"]
    assert names.index("blocks.0.attn.W_O") < names.index("blocks.0.mlp.W_in") < names.index("blocks.1.ln1.w")
    assert shapes["embed.W_E"] == (3, 8) and shapes["unembed.W_U"] == (8, 2) and shapes["blocks.1.attn.W_Q"] == (2, 8, 4)


@pytest.mark.parametrize("kw", CONFIGS + [dict(d_in=3, d_out=2, n_ctx=7, d_head=3)], ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_config_counts_the_models_parameters(kw):
    """ModelConfig.num_params (the size limit, checked before any allocation) is the model's real count."""
    cfg = small(**kw)
    model = minigpt.Transformer(cfg)
    assert cfg.num_params() == model.num_params() == sum(int(np.prod(s)) for s in param_shapes(cfg).values())


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(d_model=10, n_heads=3), "d_model"),
        (dict(n_layers=0), "n_layers"),
        (dict(act_fn="swish"), "act_fn"),
        (dict(normalization_type="RMS"), "normalization_type"),
        (dict(dtype="float16"), "dtype"),
        (dict(eps=0.0), "eps"),
        (dict(d_mlp=2.5), "d_mlp"),
        (dict(attn_only="yes"), "attn_only"),
    ],
)
def test_invalid_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        minigpt.ModelConfig(**kw)
