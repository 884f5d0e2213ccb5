"""The packaged Lite0 weights, mapped onto timm's efficientnet_lite0, recognise a cat."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
data = pytest.importorskip("skimage.data")

from modelbuilder.pipeline.preprocess import preprocess  # noqa: E402
from modelbuilder.training.backbones import get_backbone_spec  # noqa: E402
from modelbuilder.training.weights import _read_state_dict, find_weights, map_state_dict  # noqa: E402

CAT_CLASSES = {281, 282, 283, 284, 285, 286, 287}  # tabby, tiger cat, Persian, Siamese, Egyptian, ...


def test_chelsea_is_classified_as_a_cat() -> None:
    spec = get_backbone_spec("efficientnet_lite0")
    source = find_weights(spec)
    assert source is not None and source.path is not None
    model = timm.create_model("efficientnet_lite0", pretrained=False)  # with its 1000-class head
    model.load_state_dict(map_state_dict(_read_state_dict(source.path), model.state_dict(), "package"))
    # ReLU6, never Swish: the weights were trained with ReLU6.
    assert any(isinstance(m, torch.nn.ReLU6) for m in model.modules())
    assert not any(isinstance(m, torch.nn.SiLU) for m in model.modules())
    x = torch.from_numpy(preprocess(np.asarray(data.chelsea()), spec.preprocessing(224)))[None]
    with torch.no_grad():
        top3 = model.eval()(x).softmax(1)[0].topk(3).indices.tolist()
    assert top3[0] in {281, 282, 285}
    assert set(top3) <= CAT_CLASSES
