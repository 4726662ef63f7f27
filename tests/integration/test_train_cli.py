"""dars-train end to end on a small synthetic fixture: labels -> train -> evaluate -> export.

The fixture plants a pattern a router can learn from the prompt alone: the weak model fails
arithmetic word problems and the strong one solves them; both answer capital-city questions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from router_models.cli import main
from router_models.contract import (
    EMBEDDING_DIM,
    META_CALIBRATION,
    META_LABEL_SCHEME,
    META_MODELS,
    META_ROUTER,
    Calibration,
)
from router_models.features import Embedder
from router_models.observations import Observation, write_observations
from router_models.pipeline import TrainedRouter

WEAK, STRONG = "edge-small", "cloud-large"
CITIES = ["France", "Japan", "Italy", "Spain", "Canada", "Egypt", "Kenya", "Chile", "Peru",
          "Norway", "Greece", "India", "Brazil", "Mexico", "Poland", "Sweden"]  # fmt: skip


def fixture_rows() -> list[Observation]:
    queries = []
    for i in range(16):
        a, b, c = 3 + i, 7 + 2 * i, 2 + i % 5
        prompt = f"Tom has {a} boxes with {b} apples each and eats {c}. How many apples are left?"
        queries.append((f"math-{i:02d}", "gsm8k", prompt, (1, 5)))
        queries.append((f"city-{i:02d}", "trivia", f"What is the capital of {CITIES[i]}?", (5, 5)))
    rows = []
    # Each pair has 2 variants x 3 decodes; (correct of 6) is fixed per model and topic.
    for n, (query_id, dataset, prompt, (k_weak, k_strong)) in enumerate(queries):
        split = "test" if (n // 2) % 4 == 3 else "train"
        for model, k in ((WEAK, k_weak), (STRONG, k_strong)):
            for variant in range(2):
                for sample in range(3):
                    score = float((variant * 3 + sample + n) % 6 < k)
                    rows.append(
                        Observation(
                            dataset=dataset, split=split, query_id=query_id, prompt=prompt,
                            model=model, score=score, variant_id=variant, sample_id=sample,
                            response=None, meta={"contaminated": query_id == "city-03"},
                        )
                    )  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("data") / "observations.jsonl.gz"
    write_observations(path, fixture_rows())
    return path


def test_cli_end_to_end(data_file: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    common = ["--cache-dir", cache, "--no-progress"]
    labels = tmp_path / "labels.json"
    assert main(["labels", "--data", str(data_file), "--weak", WEAK, "--strong", STRONG,
                 "--scheme", "dars", "--param", "beta=0.2", "--seed", "1", "--out", str(labels),
                 *common]) == 0  # fmt: skip
    label_data = json.loads(labels.read_text())
    assert len(label_data["rows"]) == 24  # train split only
    by_id = {row["query_id"]: row["target"] for row in label_data["rows"]}
    assert np.mean([t for q, t in by_id.items() if q.startswith("math")]) > 0.8
    assert np.mean([t for q, t in by_id.items() if q.startswith("city")]) < 0.5

    router_file = tmp_path / "router.pkl"
    assert main(["train", "--labels", str(labels), "--router", "knn", "--param", "n_neighbors=3",
                 "--seed", "1", "--out", str(router_file), *common]) == 0  # fmt: skip
    router = TrainedRouter.load(router_file)
    assert (router.kind, router.label_scheme, router.n_train) == ("knn", "dars", 24)

    eval_dir = tmp_path / "eval"
    assert main(["evaluate", "--data", str(data_file), "--weak", WEAK, "--strong", STRONG,
                 "--router", f"knn-dars={router_file}", "--exclude-flag", "contaminated",
                 "--out-dir", str(eval_dir), *common]) == 0  # fmt: skip
    reports = {row["name"]: row for row in json.loads((eval_dir / "evaluation.json").read_text())}
    assert list(reports) == ["random", "prompt-length", "knn-dars", "oracle"]
    # The planted pattern is learnt: math first, as the oracle does.
    assert reports["knn-dars"]["APGR"] == pytest.approx(reports["oracle"]["APGR"])
    assert reports["knn-dars"]["CPT(50%)"] < reports["random"]["CPT(50%)"]
    assert reports["random"]["APGR"] == pytest.approx(50.0)
    assert (eval_dir / "evaluation.png").read_bytes().startswith(b"\x89PNG")

    onnx_file = tmp_path / "router.onnx"
    assert main(["export", "--router", str(router_file), "--data", str(data_file),
                 "--split", "test", "--cloud-share", "0.5", "--out", str(onnx_file),
                 *common]) == 0  # fmt: skip
    check_onnx(onnx_file, router, cache, expected_scheme="dars")

    # The same run from one config file; the embedding cache makes it encoder-free.
    config = {
        "seed": 1,
        "output_dir": str(tmp_path / "run"),
        "models": {"weak": WEAK, "strong": STRONG},
        "data": {
            "train": {"paths": [str(data_file)], "splits": ["train"]},
            "test": {
                "paths": [str(data_file)],
                "splits": ["test"],
                "exclude_flags": ["contaminated"],
            },
        },
        "labels": {"scheme": "single-shot"},
        "router": {"kind": "knn", "params": {"n_neighbors": 3}},
        "embedding": {"cache_dir": cache, "model_path": str(tmp_path / "no-encoder")},
        "export": {"cloud_share": 0.3},
    }
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(config))
    assert main(["run", "--config", str(config_file), "--no-progress"]) == 0
    run_dir = tmp_path / "run"
    for name in ("labels.json", "router.pkl", "evaluation.md", "evaluation.png", "router.onnx"):
        assert (run_dir / name).is_file(), name
    check_onnx(run_dir / "router.onnx", TrainedRouter.load(run_dir / "router.pkl"), cache,
               expected_scheme="single-shot")  # fmt: skip


def check_onnx(path: Path, router: TrainedRouter, cache: str, *, expected_scheme: str) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta[META_LABEL_SCHEME] == expected_scheme
    assert meta[META_ROUTER] == "knn"
    assert json.loads(meta[META_MODELS]) == {"edge": WEAK, "cloud": STRONG}
    Calibration.from_json(meta[META_CALIBRATION])
    prompts = sorted({o.prompt for o in fixture_rows() if o.split == "test"})
    X = Embedder(cache_dir=cache, model_path="/nonexistent", progress=False)(prompts)
    assert X.shape == (8, EMBEDDING_DIM)
    (scores,) = session.run(["score"], {"embedding": X})
    assert scores.shape == (8,) and np.all((scores >= 0) & (scores <= 1))
    assert scores == pytest.approx(router.predict(X), abs=1e-4)


def test_cli_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"dataset": "x"}\n')
    code = main(["labels", "--data", str(bad), "--out", str(tmp_path / "l.json"), "--no-progress"])
    assert code == 2
    assert f"{bad}:1: missing required field" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text("models: {weak: a}\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "models must name" in capsys.readouterr().err


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "router_models", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    for command in ("labels", "train", "evaluate", "export", "run", "collect"):
        assert command in result.stdout


def test_run_with_all_pairs_fits_mf_on_every_pair(tmp_path: Path) -> None:
    """``labels.pairs: all`` with three models: MF learns all three pairs, scores the deployed
    one, and the ONNX file names it; the staged CLI without names scores the extreme pair."""
    import onnxruntime as ort

    mid = "edge-mid"
    rows = fixture_rows()
    rows += [
        Observation.from_dict({**o.to_dict(), "model": mid, "score": float(o.sample_id != 0)})
        for o in rows
        if o.model == WEAK
    ]
    data = tmp_path / "three.jsonl.gz"
    write_observations(data, rows)
    cache = str(tmp_path / "cache")
    config = {
        "seed": 0,
        "output_dir": str(tmp_path / "run"),
        "models": {"weak": mid, "strong": STRONG},
        "data": {
            "train": {"paths": [str(data)], "splits": ["train"]},
            "test": {"paths": [str(data)], "splits": ["test"]},
        },
        "labels": {"scheme": "dars", "pairs": "all"},
        "router": {"kind": "mf", "params": {"n_factors": 4, "max_iter": 20}},
        "embedding": {"cache_dir": cache},
    }
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(config))
    assert main(["run", "--config", str(config_file), "--no-progress"]) == 0
    run_dir = tmp_path / "run"
    router = TrainedRouter.load(run_dir / "router.pkl")
    assert router.estimator.n_models_ == 3 and set(router.models) == {WEAK, mid, STRONG}
    assert (router.weak_model, router.strong_model) == (mid, STRONG)
    labels = json.loads((run_dir / "labels.json").read_text())
    assert labels["score_pair"] == [mid, STRONG]
    assert {tuple(row["pair"]) for row in labels["rows"]} == {
        (WEAK, mid),
        (WEAK, STRONG),
        (mid, STRONG),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(run_dir / "router.onnx"), options, providers=["CPUExecutionProvider"]
    )
    meta = session.get_modelmeta().custom_metadata_map
    assert (meta[META_ROUTER], meta[META_LABEL_SCHEME]) == ("mf", "dars")
    assert json.loads(meta[META_MODELS]) == {"edge": mid, "cloud": STRONG}
    prompts = sorted({o.prompt for o in rows if o.split == "test"})
    X = Embedder(cache_dir=cache, model_path="/nonexistent", progress=False)(prompts)
    (scores,) = session.run(["score"], {"embedding": X})
    assert scores == pytest.approx(router.predict(X), abs=1e-4)

    # Staged, with no model names: the weakest vs the strongest model is scored and exported.
    common = ["--cache-dir", cache, "--no-progress"]
    staged_labels, staged_router = tmp_path / "labels.json", tmp_path / "router.pkl"
    assert main(["labels", "--data", str(data), "--pairs", "all", "--scheme", "dars",
                 "--out", str(staged_labels), *common]) == 0  # fmt: skip
    assert main(["train", "--labels", str(staged_labels), "--router", "mf",
                 "--param", "max_iter=5", "--out", str(staged_router), *common]) == 0  # fmt: skip
    onnx_file = tmp_path / "staged.onnx"
    assert main(["export", "--router", str(staged_router), "--data", str(data),
                 "--split", "test", "--out", str(onnx_file), *common]) == 0  # fmt: skip
    staged = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    staged_meta = staged.get_modelmeta().custom_metadata_map
    assert json.loads(staged_meta[META_MODELS]) == {"edge": WEAK, "cloud": STRONG}
    assert TrainedRouter.load(staged_router).estimator.n_models_ == 3


def test_quickstart_config_runs_end_to_end_on_a_subset(tmp_path: Path) -> None:
    """The shipped quick-start config, on 40 queries of the bundled dataset: held-out split by
    query, labels -> train -> evaluate -> export, and an ONNX file the service itself loads."""
    import torch

    from app.scoring import load_router_model
    from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID
    from router_models.observations import read_observations
    from router_models.splits import Holdout

    torch.set_num_threads(1)
    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "router_models/configs/quickstart-local.yaml").read_text())
    (bundled,) = config["data"]["train"]["paths"]
    rows = read_observations(root / bundled)
    by_dataset: dict[str, list[str]] = {}
    for obs in rows:
        ids = by_dataset.setdefault(obs.dataset, [])
        if obs.query_id not in ids:
            ids.append(obs.query_id)
    keep = set(by_dataset["gsm8k"][:12] + by_dataset["nq-open"][:28])
    subset = tmp_path / "subset.jsonl.gz"
    write_observations(subset, [obs for obs in rows if obs.query_id in keep])
    config["data"]["train"]["paths"] = [str(subset)]
    config["output_dir"] = str(tmp_path / "runs" / "quickstart")
    config["embedding"]["cache_dir"] = str(tmp_path / "cache")
    config_file = tmp_path / "quickstart.yaml"
    config_file.write_text(yaml.safe_dump(config))

    assert main(["run", "--config", str(config_file), "--no-progress"]) == 0
    run_dir = tmp_path / "runs" / "quickstart"
    trained = {row["query_id"] for row in json.loads((run_dir / "labels.json").read_text())["rows"]}
    holdout = Holdout(config["data"]["holdout"]["fraction"])
    held = {q for q in keep if holdout.keeps(q, "test", seed=config["seed"])}
    assert trained == keep - held and held  # disjoint by query, nothing lost
    reports = json.loads((run_dir / "evaluation.json").read_text())
    assert [r["name"] for r in reports] == ["random", "prompt-length", "knn-dars", "oracle"]
    model = load_router_model(
        run_dir / "router.onnx",
        expected_embedding_model=DEFAULT_EMBEDDING_MODEL_ID,
        expected_dim=EMBEDDING_DIM,
        providers="cpu",
        intra_op_threads=1,
    )
    assert model.models == {"edge": config["models"]["weak"], "cloud": config["models"]["strong"]}
    assert (model.router_kind, model.label_scheme) == ("knn", "dars")
    held_prompts = sorted({obs.prompt for obs in rows if obs.query_id in held})
    X = Embedder(cache_dir=tmp_path / "cache", progress=False)(held_prompts)
    scores = model.score(X)
    assert scores.shape == (len(held),) and np.all((scores >= 0) & (scores <= 1))


K_MODELS = ("gemma-2b-it", "gemma-7b-it", "gpt-3.5-turbo-1106")  # cheap -> dear, all priced


def k_model_rows() -> list[Observation]:
    """Three models: all answer capitals; on arithmetic the cheap one fails, the middle one
    is half right and the dear one is right. One split column: a quarter of the queries test."""
    rows = []
    for i in range(16):
        a, b = 3 + i, 7 + 2 * i
        math = (f"math-{i:02d}", f"Tom has {a} boxes of {b} apples. How many apples?", (0, 1, 2))
        city = (f"city-{i:02d}", f"What is the capital of {CITIES[i]}?", (2, 2, 2))
        for n, (query_id, prompt, correct) in enumerate((math, city)):
            split = "test" if i % 4 == 3 else "train"
            for model, k in zip(K_MODELS, correct, strict=True):
                for variant in range(2):
                    rows.append(
                        Observation(
                            dataset=("gsm8k", "trivia")[n], split=split, query_id=query_id,
                            prompt=prompt, model=model, score=float(variant < k),
                            variant_id=variant, sample_id=0, response=None, meta={},
                        )
                    )  # fmt: skip
    return rows


@pytest.mark.parametrize("kind", ["knn", "mlp"])
def test_run_k_models_end_to_end(kind: str, tmp_path: Path, encoder: object) -> None:
    """``dars-train run`` with a list of models writes a contract-v2 file the service loads."""
    from app.scoring import load_router_model
    from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID, QUALITY_CALIBRATION_MAX_ROWS

    data = tmp_path / "k.jsonl.gz"
    write_observations(data, k_model_rows())
    params = (
        {"n_neighbors": 4} if kind == "knn" else {"hidden_layer_sizes": [16, 8], "max_iter": 50}
    )
    config = {
        "seed": 3,
        "output_dir": str(tmp_path / "run"),
        "models": list(K_MODELS),
        "data": {
            "train": {"paths": [str(data)], "splits": ["train"]},
            "test": {"paths": [str(data)], "splits": ["test"]},
        },
        "router": {"kind": kind, "params": params},
        "embedding": {"cache_dir": str(tmp_path / "cache")},
    }
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(config))
    assert main(["run", "--config", str(config_file), "--no-progress"]) == 0

    run = tmp_path / "run"
    report = json.loads((run / "evaluation.json").read_text())
    names = [row["router"] for row in report["reports"]]
    assert names == [*K_MODELS, "random mixtures", f"{kind}_quality-dars", "oracle"]
    aiqs = {row["router"]: row["AIQ"] for row in report["reports"]}
    assert aiqs["random mixtures"] - 1e-9 <= aiqs["oracle"]

    model = load_router_model(
        run / "router.onnx",
        expected_embedding_model=DEFAULT_EMBEDDING_MODEL_ID,
        expected_dim=EMBEDDING_DIM,
    )
    assert model.model_ids == K_MODELS
    assert model.router_kind == f"{kind}_quality" and model.decides_by_utility
    assert model.quality_calibration is not None
    assert model.quality_calibration.shape == (8, 3) <= (QUALITY_CALIBRATION_MAX_ROWS, 3)
    X = Embedder(cache_dir=str(tmp_path / "cache"), progress=False)(
        ["What is the capital of Peru?", "Tom has 9 boxes of 3 apples. How many apples?"]
    )
    quality = model.quality(X)
    assert quality.shape == (2, 3) and np.all((quality >= 0) & (quality <= 1))


def test_run_k_models_refuses_two_model_settings(tmp_path: Path) -> None:
    from router_models.config import ConfigError, load_config

    base = {"models": list(K_MODELS), "data": {"train": {"paths": ["x"]}, "holdout": 0.25}}
    assert load_config({**base, "router": {"kind": "mf"}}).router_kind == "mf_quality"
    for extra in (
        {"router": {"kind": "sw_ranking"}},
        {"labels": {"scheme": "semantic-entropy"}},
        {"export": {"cloud_share": 0.5}},
        {"models": K_MODELS[:2]},
    ):
        with pytest.raises(ConfigError):
            load_config({**base, **extra})
    assert load_config({**base, "models": list(K_MODELS[:2]), "k_models": True}).k_models
