"""The text stage's encoder on torch (sentence-transformers, as `llmesr-embed` runs it) against the same
model exported to ONNX and run by onnxruntime (benches/RESULTS.md, "The text stage under ONNX Runtime").
One thread each, the same batches (64 texts, shortest first), best of two rounds; prints texts/s, tokens/s
and the cosine of each vector to torch's. Needs `pip install onnx onnxruntime` (not a dependency of llmesr).

    python benches/onnx_probe.py DATA_FOLDER [--texts 300]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from llmesr.data import load_dataset
from llmesr.encoders import SentenceTransformerEncoder
from llmesr.text import item_prompts, user_prompts

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class LastHiddenState(torch.nn.Module):
    """The transformer with keyword inputs and one output, as the exporter wants it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state


def main() -> None:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--texts", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    rng = np.random.default_rng(0)
    encoder = SentenceTransformerEncoder(device="cpu")
    tokenizer, window = encoder.model.tokenizer, encoder.model.max_seq_length
    path = os.path.join(tempfile.mkdtemp(), "encoder.onnx")
    example = tokenizer(["an example"], return_tensors="pt")
    torch.onnx.export(
        LastHiddenState(encoder.model[0].auto_model.eval()),
        tuple(example[k] for k in INPUTS),
        path,
        dynamo=False,
        input_names=list(INPUTS),
        output_names=["last"],
        dynamic_axes={k: {0: "batch", 1: "tokens"} for k in (*INPUTS, "last")},
        opset_version=17,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def onnx_encode(texts: list[str]) -> np.ndarray:
        """sentence-transformers' pipeline for this model: mean of the token states, then L2-normalised."""
        x = tokenizer(texts, padding=True, truncation=True, max_length=window, return_tensors="np")
        last = session.run(None, {k: x[k].astype(np.int64) for k in INPUTS})[0]
        mask = x["attention_mask"][..., None].astype(np.float32)
        v = (last * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    for what, prompts in (("users", user_prompts(ds)), ("items", item_prompts(ds))):
        texts = sorted((prompts[i] for i in rng.choice(len(prompts), args.texts, replace=False)), key=len)
        tokens = sum(min(len(tokenizer(t)["input_ids"]), window) for t in texts)
        best: dict[str, tuple[float, np.ndarray]] = {}
        for _ in range(2):
            for name, encode in (("torch", encoder.encode), ("onnxruntime", onnx_encode)):
                start = time.perf_counter()
                vectors = np.concatenate([encode(texts[i : i + 64]) for i in range(0, len(texts), 64)])
                seconds = time.perf_counter() - start
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, vectors)
        cosine = (best["torch"][1] * best["onnxruntime"][1]).sum(1)
        rates = "; ".join(f"{n} {len(texts) / s:.1f} texts/s, {tokens / s:.0f} tokens/s" for n, (s, _) in best.items())
        print(
            f"{what}: {len(texts)} texts, {tokens} tokens; {rates}; speed-up "
            f"{best['torch'][0] / best['onnxruntime'][0]:.2f}x; cosine min {cosine.min():.6f}"
        )


if __name__ == "__main__":
    main()
