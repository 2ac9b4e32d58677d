"""The ONNX operators TensorRT 10 supports, as its ONNX parser (onnx-tensorrt) lists them.

Source: onnx/onnx-tensorrt, ``docs/operators.md`` at the "ONNX-TensorRT 10.1 GA release"
commit 96e781103cfc4adf4a6bb557e94bac8e693f6f4c (branch 10.1-GA, June 2024):
https://github.com/onnx/onnx-tensorrt/blob/96e781103cfc4adf4a6bb557e94bac8e693f6f4c/docs/operators.md
("TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20").
Copied as data: every row marked Y (supported, some with restrictions, quoted in
:data:`RESTRICTIONS`) and every row marked N.  The authority stays TensorRT's own parser
(``emotrack engines build`` reports each of its errors); this table lets CPU-only CI catch a
model that could never become an engine.
"""

from __future__ import annotations

from pathlib import Path

SOURCE = ("https://github.com/onnx/onnx-tensorrt/blob/96e781103cfc4adf4a6bb557e94bac8e693f6f4c/"
          "docs/operators.md")
OPSET_MIN, OPSET_MAX = 9, 20

SUPPORTED_OPS = frozenset((
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv",
    "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp",
    "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
    "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample",
    "GroupNormalization", "GRU", "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If",
    "ImageScaler", "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu",
    "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN", "LSTM", "LpNormalization", "LpPool",
    "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul",
    "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus",
    "Pow", "PRelu", "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform",
    "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RNN", "RoiAlign", "Round",
    "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink",
    "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu",
    "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor"
))

UNSUPPORTED_OPS = frozenset((
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
    "BlackmanWindow", "Col2Im", "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger",
    "DFT", "Det", "DynamicQuantizeLinear", "HammingWindow", "HannWindow", "ImageDecoder",
    "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial",
    "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement",
    "QLinearConv", "QLinearMatMul", "RegexFullMatch", "STFT", "SequenceAt", "SequenceConstruct",
    "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap",
    "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit",
    "TfIdfVectorizer", "Unique"
))

RESTRICTIONS = {
    'AveragePool': '2D or 3D Pooling only. `dilations` must be empty or all ones',
    'Constant': '`sparse_value`, `value_string`, and `value_strings` attributes are unsupported.',
    'CumSum': '`axis` must be an initializer',
    'DeformConv': '`input` must have 1D or 2D spatial dimensions. `pads` for the beginning and end along each spatial axis must be the same',
    'DequantizeLinear': '`x_zero_point` must be zero',
    'Dropout': '`is_traning` must be an initializer and evaluate to False.',
    'EyeLike': '`input` must have static dimensions',
    'GridSample': 'Input must be 4D input.',
    'GRU': 'For bidirectional GRUs, activation functions must be the same for both the forward and reverse pass',
    'Hardmax': '`axis` dimension of input must be a build-time constant',
    'If': 'Output tensors of the two conditional branches must have the same rank and must have different names',
    'LayerNormalization': 'Only the first output `Y` is supported.',
    'Loop': 'Scan output length cannot be dynamic. The shape of Loop carried dependencies must be the same across all loop iterations.',
    'LSTM': 'For bidirectional LSTMs, activation functions must be the same for both the forward and reverse pass. `input_forget` attribute must be 0. `layout` attribute must be 0.',
    'LpPool': '`dilations` must be empty or all ones',
    'MaxPool': '2D or 3D pooling only. `Indices` output tensor unsupported. `dilations` must be empty or all ones',
    'OneHot': '`depth` must be a build-time constant',
    'Pad': '`axes` must be an initializer',
    'QuantizeLinear': '`y_zero_point` must be 0',
    'RandomNormal': '`seed` value is ignored by TensorRT',
    'RandomNormalLike': '`seed` value is ignored by TensorRT',
    'RandomUniform': '`seed` value is ignored by TensorRT',
    'RandomUniformLike': '`seed` value is ignored by TensorRT',
    'ReduceL1': '`axes` must be an initializer',
    'ReduceL2': '`axes` must be an initializer',
    'ReduceLogSum': '`axes` must be an initializer',
    'ReduceLogSumExp': '`axes` must be an initializer',
    'ReduceMax': '`axes` must be an initializer',
    'ReduceMean': '`axes` must be an initializer',
    'ReduceMin': '`axes` must be an initializer',
    'ReduceProd': '`axes` must be an initializer',
    'ReduceSum': '`axes` must be an initializer',
    'ReduceSumSquare': '`axes` must be an initializer',
    'Resize': 'Supported resize transformation modes: `half_pixel`, `pytorch_half_pixel`, `tf_half_pixel_for_nn`, `asymmetric`, and `align_corners`. Supported resize modes: `nearest`, `linear`. Supported nearest modes: `floor`, `ceil`, `round_prefer_floor`, `round_prefer_ceil`. Supported aspect ratio policy: `stretch`. When `scales` is a tensor input, `axes` must be an iota vector of length rank(input). Antialiasing is not supported.',
    'RNN': 'For bidirectional RNNs, activation functions must be the same for both the forward and reverse pass',
    'ScatterND': '`reduction` is not supported',
    'Slice': '`axes` must be an initializer',
    'Squeeze': '`axes` must be an initializer',
    'TopK': '`sorted` must be 1. `K` input must be less than 3840.',
    'Unsqueeze': '`axes` must be a constant tensor',
}


def _nodes(graph):
    """Every node of ``graph`` and of its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.HasField("g"):
                yield from _nodes(attr.g)
            for g in attr.graphs:
                yield from _nodes(g)


def op_types(onnx_path: str | Path) -> set[tuple[str, str]]:
    """(domain, op_type) of every node in the ONNX graph (needs the onnx package)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {(n.domain or "", n.op_type) for n in _nodes(model.graph)}


def check_model(onnx_path: str | Path) -> list[str]:
    """Problems that keep TensorRT 10 from parsing the model (empty when there are none):
    ops outside :data:`SUPPORTED_OPS`, custom domains, a default-domain opset outside 9..20.
    Restricted ops are reported only by TensorRT's parser itself."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    problems = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not OPSET_MIN <= imp.version <= OPSET_MAX:
            problems.append(f"opset {imp.version} is outside TensorRT 10's {OPSET_MIN}..{OPSET_MAX}")
    for domain, op in sorted(op_types(onnx_path)):
        if domain not in ("", "ai.onnx"):
            problems.append(f"{domain}.{op}: custom domain (needs a TensorRT plugin)")
        elif op not in SUPPORTED_OPS:
            why = "listed as unsupported" if op in UNSUPPORTED_OPS else "not in the support matrix"
            problems.append(f"{op}: {why}")
    return problems
