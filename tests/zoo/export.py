"""Zoo models exported by ``torch.onnx`` (TorchScript exporter) and quantized by ONNX Runtime.

Each entry records the MACs counted from the torch module (:func:`torch_macs`) at
the input shape the test gives, so the importer is checked against torch's own
layer shapes.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from .torch_models import (
    MobileNetV2ish,
    Recurrentish,
    ResNetish,
    SharedWeights,
    ShuffleNetish,
    SwinMaskish,
    ViTish,
    torch_macs,
    torch_params,
)

Entry = dict[str, Any]
# name: (module class, dynamic axes of the input, opset, batch at test time, form, key ops)
TORCH_MODELS: dict[str, tuple] = {
    "resnet_static.onnx": (ResNetish, None, 17, None,
                           "torch.onnx static; BatchNorm folded (shared zero biases)",
                           ["Conv", "Gemm"]),
    "resnet_dynamic.onnx": (ResNetish, {0: "batch"}, 17, 2,
                            "torch.onnx, dynamic batch", ["Conv", "Gemm"]),
    "mobilenetv2_dynamic.onnx": (MobileNetV2ish, {0: "batch", 2: "h", 3: "w"}, 17, 1,
                                 "torch.onnx depthwise blocks, dynamic batch and size",
                                 ["Conv", "Clip", "HardSwish"]),
    "shufflenet_dynamic.onnx": (ShuffleNetish, {0: "batch", 2: "h", 3: "w"}, 17, 1,
                                "torch.onnx channel shuffle, shapes computed at run time",
                                ["Shape", "Reshape", "Transpose", "Slice"]),
    "vit_opset17.onnx": (ViTish, {0: "batch"}, 17, 1,
                         "torch.onnx ViT (LayerNormalization, Einsum, Erf GELU, Softmax)",
                         ["LayerNormalization", "Einsum", "Erf", "Softmax", "MatMul"]),
    "vit_opset13.onnx": (ViTish, None, 13, None,
                         "torch.onnx ViT at opset 13 (LayerNorm decomposed)",
                         ["ReduceMean", "Einsum", "Erf", "Softmax"]),
    "swin_mask_dynamic.onnx": (SwinMaskish, {0: "batch", 2: "h", 3: "w"}, 17, 1,
                               "torch.onnx shifted-window mask built at run time",
                               ["Mod", "Where", "Equal", "Expand", "Range"]),
    "shared_weights.onnx": (SharedWeights, None, 17, None,
                            "torch.onnx, one Linear applied twice", ["Gemm"]),
    "recurrent_dynamic.onnx": (Recurrentish, {0: "batch", 1: "seq"}, 17, 2,
                               "torch.onnx 2-layer bidirectional LSTM and a GRU, batch-first, "
                               "dynamic batch and sequence", ["LSTM", "GRU"]),
}


def _export(module: torch.nn.Module, x: torch.Tensor, opset: int,
            dynamic: dict[int, str] | None) -> onnx.ModelProto:
    buf = io.BytesIO()
    kw: dict[str, Any] = {}
    if dynamic:
        kw["dynamic_axes"] = {"input": dynamic, "output": {0: dynamic[0]}}
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"], **kw)
    return onnx.load_from_string(buf.getvalue())


def write_torch_dynamo(directory: Path) -> dict[str, Entry]:
    """Export every module of :data:`TORCH_MODELS` with torch's *dynamo* exporter (the
    default in torch 2.13; needs onnxscript) at its static input shape, weights in the
    file. Its optimizer stores equal-valued tensors once for every layer that reads them
    (no ``Identity`` aliases) and drops zero biases; the entries say what torch counts
    where that loses nothing (no BatchNorm folded into a zero bias)."""
    entries: dict[str, Entry] = {}
    for name, (cls, _dynamic, _opset, _batch, form, _key_ops) in TORCH_MODELS.items():
        torch.manual_seed(0)
        module = cls().eval()
        x = torch.randn(*cls.input_shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)  # "torchvision is not installed" notices
            try:
                program = torch.onnx.export(module, (x,), dynamo=True, verbose=False)
            finally:
                logging.disable(logging.NOTSET)
        out = name.replace(".onnx", "_dynamo.onnx")
        onnx.save(program.model_proto, str(directory / out))
        entries[out] = {"exporter": "torch.onnx dynamo", "form": f"{form} (dynamo exporter)",
                        "macs": torch_macs(module, x), "input_shape": None}
        if (not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
                and name not in _DYNAMO_FOLDS_FORWARD):
            entries[out]["params"] = torch_params(module)
    return entries


# Modules whose forward computes a tensor from static shapes alone (the shifted-window
# mask): at a static shape the dynamo exporter stores its value as an initializer, which
# a file cannot tell from a weight (torch counts no parameter for it).
_DYNAMO_FOLDS_FORWARD = {"swin_mask_dynamic.onnx"}


def _shape(module_cls: type, batch: int | None) -> tuple[int, ...]:
    shape = tuple(module_cls.input_shape)
    return (batch, *shape[1:]) if batch else shape


def write_torch(directory: Path) -> dict[str, Entry]:
    """Export every model of :data:`TORCH_MODELS` into ``directory``."""
    entries: dict[str, Entry] = {}
    for name, (cls, dynamic, opset, batch, form, key_ops) in TORCH_MODELS.items():
        torch.manual_seed(0)
        module = cls().eval()
        x = torch.randn(*cls.input_shape)
        model = _export(module, x, opset, dynamic)
        onnx.save(model, str(directory / name))
        shape = _shape(cls, batch)
        entries[name] = {
            "exporter": "torch.onnx", "form": form, "key_ops": key_ops,
            "macs": torch_macs(module, torch.randn(*shape)),
            "input_shape": "x".join(map(str, shape)) if dynamic else None}
        if not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules()):
            # no BatchNorm folded away: every parameter torch counts is in the file (equal-valued
            # ones of different layers as Identity aliases of one initializer)
            entries[name]["params"] = torch_params(module)
    return entries


def write_external(directory: Path, entries: dict[str, Entry]) -> dict[str, Entry]:
    """resnet_static with its weights in a side file (``resnet_external.onnx.data``)."""
    model = onnx.load(str(directory / "resnet_static.onnx"))
    onnx.save(model, str(directory / "resnet_external.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="resnet_external.onnx.data",
              size_threshold=0)
    base = entries["resnet_static.onnx"]
    return {"resnet_external.onnx": {**base, "form": "torch.onnx, weights in an external "
                                                     "data file", "key_ops": ["Conv"]}}


class _Reader:
    """Calibration data for ONNX Runtime's static quantization: a few random batches."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        rng = np.random.default_rng(0)
        self.batches = iter([{"input": rng.normal(size=shape).astype(np.float32)}
                             for _ in range(2)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def _inline_identities(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace ``Identity(initializer)`` by a copy of the initializer.

    ONNX Runtime's quantizer cannot follow the Identity-shared biases torch.onnx
    writes (it looks the bias up among the initializers and crashes).
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    for node in list(g.node):
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            g.initializer.append(copy)
            g.node.remove(node)
    return model


def write_quantized(directory: Path, entries: dict[str, Entry]) -> dict[str, Entry]:
    """resnet_static quantized by ONNX Runtime: QDQ format and QOperator (QLinearConv)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src = directory / "resnet_for_quantization.onnx.tmp"
    onnx.save(_inline_identities(onnx.load(str(directory / "resnet_static.onnx"))), str(src))
    base = entries["resnet_static.onnx"]
    out: dict[str, Entry] = {}
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's pre-processing advice
    for name, fmt, ops, key in (
            ("resnet_qdq.onnx", QuantFormat.QDQ, None, ["QuantizeLinear", "DequantizeLinear"]),
            ("resnet_qoperator.onnx", QuantFormat.QOperator, ["Conv", "MatMul"],
             ["QLinearConv"])):
        quantize_static(str(src), str(directory / name), _Reader(ResNetish.input_shape),
                        quant_format=fmt, op_types_to_quantize=ops,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        out[name] = {**base, "exporter": "onnxruntime.quantization",
                     "form": f"ONNX Runtime static quantization, {fmt.name} format",
                     "key_ops": key}
    src.unlink()
    return out


def write_all(directory: Path) -> dict[str, Entry]:
    entries = write_torch(directory)
    entries.update(write_external(directory, entries))
    entries.update(write_quantized(directory, entries))
    return entries
