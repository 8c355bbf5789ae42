"""The FP16 variant of the exported graph, for strongly typed TensorRT engines.

TensorRT 11 builds reduced precision only from a graph whose tensors carry it. This module
rewrites the FP32 export of :mod:`dense_ood_ros.onnx_graph` so that the network (the image
cast, normalisation, encoder and decoder up to the logits) computes in FP16, while what turns
the logits into outputs stays FP32: the ``.float()`` cast of the logits in
:class:`dense_ood_ros.graph.InferenceGraph` is the boundary, so the label upsampling and
argmax, and the scores' log-space arithmetic (log-softmax, JSD, the score upsampling), run on
FP32 logits. Inputs and outputs are unchanged: uint8 images in, uint8 labels and float32
scores out.

The rewrite is exact about types: every float32 initializer and ``Constant`` read by the
network becomes float16, every ``Cast`` to float32 inside it casts to float16, and a float
tensor of the network read outside it (none in today's graph but the boundary) gets a cast
back to float32. The result is checked with ``onnx.checker`` (full type inference) and cached
like the FP32 file (:func:`cached_fp16_onnx`), keyed by the FP32 file's checksum and
:data:`FP16_VERSION`.
"""

from pathlib import Path
from typing import Dict, List, Optional, Set, Union

import numpy as np

from dense_ood_ros import cache
from dense_ood_ros.io import atomic_write, file_sha256
from dense_ood_ros.onnx_graph import PRECISION_KEY, ModelFileError, read_onnx_info

#: Bumped whenever the rewrite changes.
FP16_VERSION = 1
#: Ops whose inputs at these positions are coordinates, not activations: they stay float32.
_FLOAT32_INPUTS = {"Resize": (1, 2)}


def _network_boundary(graph) -> "onnx.NodeProto":  # noqa: F821 (onnx is imported lazily)
    """Return the Cast that turns the network's logits to float32 (labels and scores read it).

    It is found from the labels: ArgMax <- Resize <- Cast(to float32).
    """
    import onnx

    producers = {out: node for node in graph.node for out in node.output}
    argmaxes = [node for node in graph.node if node.op_type == "ArgMax"]
    if len(argmaxes) == 1:
        resize = producers.get(argmaxes[0].input[0])
        cast = producers.get(resize.input[0]) if resize is not None else None
        if cast is not None and cast.op_type == "Cast" and \
                onnx.helper.get_attribute_value(cast.attribute[0]) == onnx.TensorProto.FLOAT:
            return cast
    raise ModelFileError("the graph has no ArgMax <- Resize <- Cast(float) chain of labels; "
                         "is it an export of dense_ood_ros.graph.InferenceGraph?")


def _ancestors(graph, tensor: str) -> List:
    """Return the nodes that ``tensor`` depends on, in graph order."""
    producers = {out: index for index, node in enumerate(graph.node) for out in node.output}
    seen: Set[int] = set()
    stack = [tensor]
    while stack:
        index = producers.get(stack.pop())
        if index is None or index in seen:
            continue
        seen.add(index)
        stack.extend(name for name in graph.node[index].input if name)
    return [node for index, node in enumerate(graph.node) if index in seen]


def _float_tensors(model) -> Set[str]:
    """Name every float32 tensor of the graph (by ONNX type inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = inferred.graph
    typed = list(graph.value_info) + list(graph.input) + list(graph.output)
    names = {info.name for info in typed
             if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    return names | {init.name for init in graph.initializer
                    if init.data_type == onnx.TensorProto.FLOAT}


def fp16_model(model) -> "onnx.ModelProto":  # noqa: F821
    """Return a copy of an FP32 export whose network computes in FP16 (see the module)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    floats = _float_tensors(model)
    graph = model.graph
    boundary = _network_boundary(graph)
    network = _ancestors(graph, boundary.input[0])
    inside = {id(node) for node in network}
    initializers = {init.name: init for init in graph.initializer}
    converted: Dict[str, str] = {}  # float32 initializer -> its float16 copy

    def half_initializer(name: str) -> str:
        if name not in converted:
            half = numpy_helper.from_array(
                numpy_helper.to_array(initializers[name]).astype(np.float16), name + "_fp16")
            graph.initializer.append(half)
            converted[name] = half.name
        return converted[name]

    for node in network:
        keep = _FLOAT32_INPUTS.get(node.op_type, ())
        for position, name in enumerate(node.input):
            if name in initializers and name in floats and position not in keep:
                node.input[position] = half_initializer(name)
        if node.op_type == "Constant":
            value = node.attribute[0]
            if value.name != "value":
                raise ModelFileError(f"Constant {node.name} has attribute {value.name}; the FP16 "
                                     "rewrite reads tensor values only")
            if value.t.data_type == onnx.TensorProto.FLOAT and not _feeds_kept_input(
                    graph, node.output[0], inside):
                value.t.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(value.t).astype(np.float16), value.t.name))
        elif node.op_type == "Cast":
            to = node.attribute[0]
            if to.i == onnx.TensorProto.FLOAT:
                to.i = onnx.TensorProto.FLOAT16
        elif any(attribute.type == onnx.AttributeProto.TENSOR for attribute in node.attribute):
            raise ModelFileError(f"node {node.name} ({node.op_type}) has a tensor attribute; "
                                 "the FP16 rewrite does not know its type")
    _cast_back_where_read_outside(graph, network, inside, floats)
    unused = [init for init in graph.initializer if init.name in converted and not any(
        init.name in node.input for node in graph.node)]
    for init in unused:
        graph.initializer.remove(init)
    del graph.value_info[:]
    return model


def _feeds_kept_input(graph, tensor: str, inside: Set[int]) -> bool:
    """Whether a network tensor is read as a coordinate input that stays float32."""
    return any(name == tensor and position in _FLOAT32_INPUTS.get(node.op_type, ())
               for node in graph.node if id(node) in inside
               for position, name in enumerate(node.input))


def _cast_back_where_read_outside(graph, network: List, inside: Set[int],
                                  floats: Set[str]) -> None:
    """Insert a Cast to float32 for every network float tensor a node outside reads.

    ``Shape`` reads any type and needs none.
    """
    import onnx

    outputs = {name for node in network for name in node.output if name in floats}
    casts: Dict[str, str] = {}
    for node in list(graph.node):
        if id(node) in inside or node.op_type == "Shape":
            continue
        for position, name in enumerate(node.input):
            if name not in outputs:
                continue
            if name not in casts:
                casts[name] = name + "_fp32"
                cast = onnx.helper.make_node("Cast", [name], [casts[name]],
                                             name=name + "_cast_fp32", to=onnx.TensorProto.FLOAT)
                graph.node.insert(list(graph.node).index(node), cast)
            node.input[position] = casts[name]


def convert_fp16(onnx_path: Union[str, Path], out_path: Union[str, Path]) -> None:
    """Write the FP16 variant of an exported FP32 ONNX file; metadata kept, ``precision: fp16``."""
    import onnx

    read_onnx_info(onnx_path)  # ours, with its metadata
    source = onnx.load(str(onnx_path))
    props = {prop.key: prop.value for prop in source.metadata_props}
    if props.get(PRECISION_KEY, "fp32") != "fp32":
        raise ModelFileError(f"{onnx_path} is {props[PRECISION_KEY]}; the FP16 graph is made from "
                             "the FP32 export")
    model = fp16_model(source)
    props.update({PRECISION_KEY: "fp16", "fp16_version": str(FP16_VERSION),
                  "fp16_source_sha256": file_sha256(onnx_path)})
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    with atomic_write(Path(out_path)) as tmp:
        tmp.write_bytes(model.SerializeToString())


def fp16_key(onnx_path: Union[str, Path]) -> Dict[str, object]:
    """Return the cache key of the FP16 file of an FP32 ONNX file."""
    import onnx

    return {"source_onnx_sha256": file_sha256(onnx_path), "fp16_version": FP16_VERSION,
            "onnx": onnx.__version__}


def cached_fp16_onnx(onnx_path: Union[str, Path], cache_dir: Union[str, Path, None] = None,
                     status: Optional[cache.StatusCallback] = None) -> Path:
    """Return the FP16 variant of an exported FP32 ONNX file: cached, or converted now."""
    key = fp16_key(onnx_path)
    name = f"{Path(onnx_path).stem}-{key['source_onnx_sha256'][:12]}.fp16.onnx"
    path = Path(cache_dir or cache.default_cache_dir()) / "onnx-fp16" / name
    return cache.ensure(path, key, lambda tmp: convert_fp16(onnx_path, tmp), "FP16 ONNX",
                        status, {"source_onnx": str(Path(onnx_path).resolve())})
