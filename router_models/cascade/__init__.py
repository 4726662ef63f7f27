"""The confidence cascade's pure decision library: meaning classes, uncertainty, decision, cost.

Ask the edge model k times, group the answers by meaning (:mod:`.meaning`), measure how much
they disagree (:mod:`.uncertainty`), keep the largest class's answer or escalate
(:mod:`.decision`), and account for what that costs (:mod:`.cost`). numpy and the stdlib only,
no I/O: the trainer's evaluation (``router_models.experiments.cascade``) and the service use
the same functions.

>>> from router_models.cascade import decide, meaning_labels
>>> labels = meaning_labels(["so 18", "#### 18", "it is 20"], kind="number")
>>> d = decide(labels, threshold=0.5)
>>> d.representative, round(d.entropy, 3), d.escalate
(0, 0.637, True)
"""

from router_models.cascade.cost import PriceTable, cascade_cost, router_cost
from router_models.cascade.decision import CascadeDecision, Signal, decide, escalates
from router_models.cascade.meaning import (
    answer_labels,
    embedding_labels,
    extracted_answers,
    greedy_clusters,
    meaning_labels,
    text_labels,
)
from router_models.cascade.uncertainty import (
    Estimator,
    disagreement,
    largest_cluster,
    semantic_entropy,
)

__all__ = [
    "CascadeDecision",
    "Estimator",
    "PriceTable",
    "Signal",
    "answer_labels",
    "cascade_cost",
    "decide",
    "disagreement",
    "embedding_labels",
    "escalates",
    "extracted_answers",
    "greedy_clusters",
    "largest_cluster",
    "meaning_labels",
    "router_cost",
    "semantic_entropy",
    "text_labels",
]
