"""What the ONNX (fp32 and int8) encoders do to routing, on real outcome data.

Embeds every query of an observation file with each backend, scores it with the bundled router
and compares with torch (sentence-transformers or its lean equivalent, the reference the
router was trained on): cosine of the embeddings, routing decisions at the router's default
threshold, and the router's APGR / CPT(50%) / CPT(80%) against the observed quality of the
weak and strong model (:mod:`router_models.evaluate`). The bundled router saw part of these
queries in training, so compare the rows with each other, not with held-out figures.

Run from the repository root (one thread, a minute or two on 2 cores)::

    python -m bench.encoder_quality [--data ../shared/data/routellm-gsm8k.jsonl.gz]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from app.encoders import load_onnx_encoder
from app.main import bundled_router_path
from app.scoring import load_router_model
from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID, EMBEDDING_DIM, load_encoder
from router_models.evaluate import evaluate_router, truth_from_observations
from router_models.observations import read_observations

__all__ = ["main"]

BATCH = 32


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/routellm-gsm8k.jsonl.gz"))
    parser.add_argument("--weak", default="mixtral-8x7b-instruct-v0.1")
    parser.add_argument("--strong", default="gpt-4-1106-preview")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    router_path = bundled_router_path()
    if router_path is None:
        raise SystemExit("no bundled router")
    truth = truth_from_observations(read_observations(args.data), args.weak, args.strong)
    prompts = list(truth.prompts)
    router = load_router_model(
        router_path, expected_embedding_model=DEFAULT_EMBEDDING_MODEL_ID, expected_dim=EMBEDDING_DIM
    )
    import torch

    torch.set_num_threads(args.threads)
    encoders = {
        "torch": load_encoder(device="cpu"),
        "onnx": load_onnx_encoder(None, int8=False, device="cpu", intra_op_threads=args.threads),
        "onnx-int8": load_onnx_encoder(
            None, int8=True, device="cpu", intra_op_threads=args.threads
        ),
    }
    lengths = [float(len(p)) for p in prompts]
    vectors = {
        name: np.concatenate(
            [
                np.asarray(encoder.encode(prompts[i : i + BATCH], normalize_embeddings=True))
                for i in range(0, len(prompts), BATCH)
            ]
        )
        for name, encoder in encoders.items()
    }
    reference = vectors["torch"]
    reference_routes = router.score(reference, lengths) >= router.default_threshold
    print(
        f"{args.data.name}: {len(prompts)} queries, {args.weak} -> {args.strong}, bundled router "
        f"(threshold {router.default_threshold:.4f})\n"
    )
    print(
        "| encoder | min cosine to torch | mean cosine | decisions = torch | cloud share "
        "| APGR | CPT(50%) | CPT(80%) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, matrix in vectors.items():
        cosine = np.sum(matrix * reference, axis=1)
        scores = router.score(matrix, lengths)
        routes = scores >= router.default_threshold
        report = evaluate_router(name, scores, truth).as_percent()
        print(
            f"| {name} | {cosine.min():.5f} | {cosine.mean():.5f} "
            f"| {np.mean(routes == reference_routes):.2%} | {routes.mean():.1%} "
            f"| {report['APGR']:.1f} | {report['CPT(50%)']:.1f} | {report['CPT(80%)']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
