"""The live loop's training rows: pretrained data never brings a held-out query back.

The live prompt is the service's prepared query text (stripped, cut to the policy's length),
while a pretrained file keeps its raw prompt. A pretrained row whose prompt prepares to a
held-out prompt is the same query for the router (the same embedding): it must be left out.
"""

from __future__ import annotations

from pathlib import Path

from router_models.live.config import LoopConfig, training_rows
from router_models.observations import Observation, write_observations
from router_models.query_prep import DEFAULT_QUERY_MAX_CHARS


def _obs(query_id: str, prompt: str) -> Observation:
    return Observation.from_dict(
        {"dataset": "bench", "split": "train", "query_id": query_id, "prompt": prompt,
         "model": "edge", "score": 1.0}
    )  # fmt: skip


def test_pretrained_rows_of_a_held_out_prompt_are_left_out_as_the_router_sees_it(
    tmp_path: Path,
) -> None:
    long = "Explain this. " + "x" * DEFAULT_QUERY_MAX_CHARS
    held_prompts = {"What is 2 + 2?", long.strip()[:DEFAULT_QUERY_MAX_CHARS]}
    pretrained = [
        _obs("b-1", "What is 2 + 2?\n"),  # a trailing newline: the same query once prepared
        _obs("b-2", long),  # longer than the query budget: the same first characters
        _obs("b-3", "What is 3 + 3?"),
    ]
    path = tmp_path / "pretrained.jsonl"
    write_observations(path, pretrained)
    config = LoopConfig(state_dir=tmp_path / "state", pretrained=[str(path)])
    kept = training_rows(config, [], {"live-1", "live-2"}, held_prompts)
    assert [o.query_id for o in kept] == ["b-3"]
