"""minigpt.nn.config: ModelConfig refuses bad fields by name; num_params and param_shapes count the model's parameters."""
import numpy as np
import pytest

import minigpt
from minigpt.nn.config import param_shapes
from tests.nn.helpers import CONFIGS, small


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
