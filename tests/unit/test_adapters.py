"""The shared contract every adapter passes, on tiny random models of every supported family."""
import pytest
import torch
import torch.nn as nn

from llmsparse.calibrate import capture_inputs, run_layer
from llmsparse.errors import UserError
from llmsparse.models.adapters import get_adapter
from tests.conftest import FAMILIES, tiny_model


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_contract(family):
    model = tiny_model(family)
    ad = get_adapter(model)
    layers = ad.layers(model)
    assert len(layers) == model.config.num_hidden_layers
    for path in ad.embed_paths:
        assert isinstance(ad.get(model, path), nn.Module)
    assert isinstance(ad.head(model), nn.Linear)
    # every linear of a layer is in exactly one group, and groups follow the forward order
    layer = layers[0]
    groups = ad.sequential_groups(layer)
    names = [n for g in groups for n in g]
    assert sorted(names) == sorted(ad.linears(layer)) and len(names) == len(set(names))
    order = []
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: order.append(n)) for n, m in ad.linears(layer).items()]
    ids = torch.randint(0, 128, (2, 12))
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    first_call = [order.index(g[0]) for g in groups]
    assert first_call == sorted(first_call), (groups, order)
    # members of one group read the same input tensor
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: seen.__setitem__(n, a[0].clone()))
             for n, m in ad.linears(layer).items()]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    for g in groups:
        for n in g[1:]:
            assert torch.equal(seen[n], seen[g[0]])
    # layer-by-layer replay from the captured layer-0 inputs equals the full forward
    outs = {}
    last = layers[-1]
    h = last.register_forward_hook(lambda mod, a, o: outs.__setitem__("last", o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        model(ids, use_cache=False)
    h.remove()
    cache = capture_inputs(model, ad, ids, device=torch.device("cpu"), batch_size=1)
    for lyr in layers:
        run_layer(lyr, cache, update=True)
    replay = torch.cat(cache.hidden)
    assert torch.allclose(replay, outs["last"], atol=1e-5, rtol=1e-5)


def test_unknown_architecture_is_a_user_error():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"model_type": "odd", "num_hidden_layers": 3})()
            self.blocks = nn.ModuleList([nn.Linear(4, 4)])

    with pytest.raises(UserError, match="no recognisable decoder layers"):
        get_adapter(Odd())
