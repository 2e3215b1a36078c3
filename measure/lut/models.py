"""One-kernel ONNX models: the model a LUT entry is measured on, built from its key alone.

The model's inputs are the kernel's activation inputs (random at measurement
time, fixed seed); its weights are random with a fixed seed; its nodes are the
key's op sequence, so the runtime applies the same fusion it applies inside a
network. Layout reorders are built as ORT's own ``com.microsoft.nchwc`` ops.
"""

from __future__ import annotations

import numpy as np

from costmodels.fusion import KernelKey

NCHWC_DOMAIN = "com.microsoft.nchwc"
_DTYPES = {"float32": 1, "float16": 10, "float64": 11}
_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min"})


def _weight(rng: np.random.Generator, op: str, shape: tuple[int, ...], j: int) -> np.ndarray:
    if op == "BatchNormalization":
        return (rng.uniform(0.5, 1.5, shape) if j in (0, 3)
                else rng.normal(0, 0.1, shape)).astype(np.float32)
    if op in ("Mul", "Add", "Sub", "Div") and not shape:
        return np.array(0.0 if op == "Mul" else 1.0, dtype=np.float32)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return rng.normal(0, (2.0 / fan_in) ** 0.5, shape).astype(np.float32)


def _via_pool(x: str, nodes: list, prefix: str) -> str:
    """A second input of a fused kernel enters through a 1x1 AveragePool.

    Runtimes fuse an Add into a Conv only when both run in the same layout; a
    pool puts the residual in the layout a network would have it in. The pool
    (and any reorder) is a kernel of its own, measured and taken off.
    """
    from onnx import helper

    nodes.append(helper.make_node("AveragePool", [x], [f"{prefix}_res"], name=f"{prefix}_res",
                                  kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0]))
    return f"{prefix}_res"


def kernel_model(key: KernelKey, seed: int = 0, opset: int = 17):
    """An ``onnx.ModelProto`` that runs exactly the kernel named by ``key``.

    Raises ``ValueError`` for a key whose first op it cannot build.
    """
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    elem = _DTYPES.get(key.dtype, 1)
    in_shapes = list(key.input_shapes)
    inputs, nodes, inits = [], [], []

    def new_input(shape: tuple[int, ...]) -> str:
        name = f"x{len(inputs)}"
        inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        return name

    def weights(op: str, shapes, prefix: str) -> list[str]:
        names = []
        for j, shp in enumerate(shapes):
            arr = _weight(rng, op, tuple(shp), j)
            inits.append(numpy_helper.from_array(arr, f"{prefix}_w{j}"))
            names.append(f"{prefix}_w{j}")
        return names

    first = key.ops[0]
    cur = new_input(in_shapes.pop(0)) if in_shapes else ""
    for i, op in enumerate(key.ops):
        out = f"y{i}"
        attrs: dict = {}
        ins = [cur]
        domain = ""
        if i == 0:
            if op in ("Conv", "ConvTranspose"):
                attrs = {"kernel_shape": list(key.kernel), "strides": list(key.stride),
                         "pads": list(key.pads), "group": key.groups}
                if key.dilation:
                    attrs["dilations"] = list(key.dilation)
                ins += weights(op, key.weight_shapes, "anchor")
            elif op in ("AveragePool", "MaxPool"):
                attrs = {"kernel_shape": list(key.kernel), "strides": list(key.stride),
                         "pads": list(key.pads)}
                if op == "AveragePool":
                    attrs["count_include_pad"] = 0
            elif op == "BatchNormalization":
                c = key.input_shapes[0][1]
                ins += weights(op, key.weight_shapes or [(c,)] * 4, "anchor")
            elif op == "Gemm":
                attrs = {"transB": 1}
                ins += weights(op, key.weight_shapes, "anchor")
            elif op == "Null":
                op = "Identity"
            elif op == "Flatten":
                attrs = {"axis": 1}
            elif op in ("ReorderInput", "ReorderOutput"):
                domain = NCHWC_DOMAIN
                if op == "ReorderOutput":
                    attrs = {"channels": key.output_shape[1]}
            elif key.weight_shapes:
                ins += weights(op, key.weight_shapes, "anchor")
            n_own = len(in_shapes) if len(key.ops) == 1 else (
                1 if op in _BINARY and not key.weight_shapes else 0)
            ins += [new_input(s) for s in in_shapes[:n_own]]
            in_shapes = in_shapes[n_own:]
        elif op == "BatchNormalization":
            ins += weights(op, [(key.output_shape[1],)] * 4, f"n{i}")
        elif op in ("Mul", "Add") and (not in_shapes or op == "Mul"):
            ins += weights(op, [()], f"n{i}")  # a constant operand (fused by ConvMul/AddFusion)
        elif op in ("Add", "Sum", "Mul"):
            ins.append(_via_pool(new_input(in_shapes.pop(0)), nodes, f"n{i}"))
        nodes.append(helper.make_node(op, ins, [out], name=f"{op.lower()}{i}", domain=domain,
                                      **attrs))
        cur = out
    if not nodes or not cur:
        raise ValueError(f"cannot build a model for kernel {key.text!r}")
    graph = helper.make_graph(nodes, f"kernel_{first}", inputs,
                              [helper.make_tensor_value_info(cur, elem,
                                                             list(key.output_shape))],
                              inits)
    opsets = [helper.make_opsetid("", opset)]
    if any(n.domain == NCHWC_DOMAIN for n in nodes):
        opsets.append(helper.make_opsetid(NCHWC_DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="costmodels-lut")
    model.ir_version = min(model.ir_version, 8)
    model.doc_string = key.text
    return model


def key_network(key: KernelKey):
    """The IR of :func:`kernel_model` (graph inputs ``x0``, ...), for the rules to split.

    Splitting it tells which extra kernels (layout reorders, the residual's pool)
    the one-kernel measurement carried besides the kernel itself.
    """
    from costmodels.network import Network, make_layer

    in_shapes = list(key.input_shapes)
    if len(key.ops) == 1:
        n_own = len(in_shapes)
    else:
        n_own = 2 if key.ops[0] in _BINARY and not key.weight_shapes else 1
    inputs = [(f"x{j}", s) for j, s in enumerate(in_shapes)]
    layers = []
    cur, nxt = [f"x{j}" for j in range(n_own)], n_own
    for i, op in enumerate(key.ops):
        name = f"y{i}"
        if i == 0:
            shapes = list(key.input_shapes[:n_own])
            layers.append(make_layer(name, op, cur, [name], shapes, key.output_shape,
                                     key.weight_shapes, kernel=key.kernel, stride=key.stride,
                                     pads=key.pads, dilation=key.dilation, groups=key.groups,
                                     dtype=key.dtype))
        elif op in ("Add", "Sum", "Mul") and nxt < len(in_shapes):
            res = in_shapes[nxt]
            layers.append(make_layer(f"n{i}_res", "AveragePool", [f"x{nxt}"], [f"n{i}_res"],
                                     [res], res, kernel=(1, 1), stride=(1, 1),
                                     pads=(0, 0, 0, 0), dtype=key.dtype))
            layers.append(make_layer(name, op, cur + [f"n{i}_res"], [name],
                                     [key.output_shape, res], key.output_shape,
                                     dtype=key.dtype))
            nxt += 1
        else:
            w = [(key.output_shape[1],)] * 4 if op == "BatchNormalization" else (
                [()] if op in ("Mul", "Add") else [])
            layers.append(make_layer(name, op, cur, [name], [key.output_shape],
                                     key.output_shape, w, dtype=key.dtype))
        cur = [name]
    return Network(f"kernel:{key.text}", tuple(inputs), tuple(layers), (cur[0],))
