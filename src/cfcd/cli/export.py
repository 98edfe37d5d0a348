"""cfcd export: the deploy model (global descriptor only) as ONNX with dynamic batch and size."""

from __future__ import annotations


def register(p) -> None:
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the file to write")
    p.add_argument("--model", default="default", help="model name, A+B (a concatenation) or weights file (default: ImageNet MobileNetV2 + EfficientNet-Lite2)")
    p.add_argument("--backbone", help="backbone of a timm state dict, e.g. timm:convnext_tiny")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17)")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx
    from ..model import load_model

    model = load_model(args.model, backbone=args.backbone)
    path = export_onnx(model, args.onnx, opset=args.opset or DEFAULT_OPSET)
    print(
        f"wrote {path}: input '{INPUT_NAME}' (batch, 3, height, width) float32, RGB ImageNet-normalised; "
        f"output '{OUTPUT_NAME}' (batch, {model.output_dim}) L2-normalised"
    )
