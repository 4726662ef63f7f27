"""Experiment drivers behind the committed reports and the shipped default router.

Each module is runnable as ``python -m router_models.experiments.<name> --data DIR --out DIR``
and writes a markdown report, a JSON file of its numbers and PNG plots:

- ``paper_protocol``: routers trained on data disjoint from the test benchmark, scored on
  RouteLLM's GPT-4 / Mixtral outcomes (GSM8K, MMLU) beside the Confidence-Driven Router's
  Table 1;
- ``dars_vs_single_shot``: the same routers trained with DARS, single-shot (many seeded draws)
  and semantic-entropy labels on data with many observations per query-model pair;
- ``pretrain``: the default ONNX router shipped in ``router_models/pretrained``;
- ``cascade``: the confidence cascade (k edge samples, semantic entropy, escalate) against
  the routers, prompt length and a hybrid, with the edge samples' cost counted.

``common`` holds what they share (leakage filters, stacked model pairs, fits, report files).
"""
