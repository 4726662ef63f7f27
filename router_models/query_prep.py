"""Query preparation: the one function that turns a chat request into the text the router sees.

The service (:mod:`app.query`, from an OpenAI request) and the trainer
(:func:`router_models.features.prepare_prompts`, from observation prompts) both call
:func:`prepare_query`, so a router is served on text prepared exactly as its training text was.

The policy (:class:`QueryPolicy`) rides in the router file's metadata as ``dars.query_policy``
(JSON, see :mod:`router_models.contract`). The default is the original behaviour: the last
user message alone, stripped, cut to 4000 characters. A follow-up such as "now do it in Rust"
carries no signal alone, so a policy may add earlier turns: ``{"turns": 2}`` routes on the last
user message plus the previous one. The latest turn comes first, so neither the cut to
``max_chars`` nor the encoder's token window ever drops the query itself; earlier turns fill
what budget is left, most recent first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = [
    "DEFAULT_QUERY_MAX_CHARS",
    "DEFAULT_QUERY_POLICY",
    "ROLES",
    "NoQueryText",
    "QueryPolicy",
    "QueryPolicyError",
    "Turn",
    "prepare_prompt",
    "prepare_query",
]

# The service cuts the query text to this many characters (``DARS_QUERY_MAX_CHARS``).
DEFAULT_QUERY_MAX_CHARS = 4000
ROLES = ("system", "developer", "user", "assistant", "tool")

# (role, text) of one message, text parts already joined: the protocol-free view of a chat.
Turn = tuple[str, str]


class QueryPolicyError(ValueError):
    """A query policy (router metadata or ``DARS_QUERY_POLICY``) is malformed."""


class NoQueryText(ValueError):
    """The conversation has no user message, or its last one has no text.

    ``index`` is the message at fault (``None``: no user message), ``code`` the error code the
    service returns (``no_user_message`` / ``no_query_text``).
    """

    def __init__(self, message: str, *, index: int | None, code: str) -> None:
        super().__init__(message)
        self.index = index
        self.code = code


@dataclass(frozen=True, kw_only=True)
class QueryPolicy:
    """Which messages the router sees and how they are joined.

    Parameters
    ----------
    roles : tuple of str
        Roles whose messages may be context. The last user message is always the query.
    turns : int
        How many messages of those roles, the query included (1 = the query alone).
    max_chars : int
        Characters of the whole text; the query is cut first, context fills the rest.
    separator : str
        Between the query and each context message.
    """

    roles: tuple[str, ...] = ("user",)
    turns: int = 1
    max_chars: int = DEFAULT_QUERY_MAX_CHARS
    separator: str = "\n\n"

    def __post_init__(self) -> None:
        if not self.roles or not set(self.roles) <= set(ROLES) or "user" not in self.roles:
            raise QueryPolicyError(f"roles must be among {ROLES} and include 'user'")
        if len(set(self.roles)) != len(self.roles):
            raise QueryPolicyError("roles must not repeat")
        if not 1 <= self.turns <= 16:
            raise QueryPolicyError("turns must be within [1, 16]")
        if self.max_chars < 1:
            raise QueryPolicyError("max_chars must be positive")

    @classmethod
    def from_json(cls, text: str, *, defaults: QueryPolicy | None = None) -> QueryPolicy:
        """Parse a JSON object; keys it omits come from ``defaults`` (else the defaults)."""
        try:
            data: Any = json.loads(text)
        except ValueError as exc:
            raise QueryPolicyError(f"query policy is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise QueryPolicyError("query policy must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise QueryPolicyError(f"query policy has unknown keys {unknown}")
        try:
            values = dict(data)
            if "roles" in values:
                values["roles"] = tuple(str(role) for role in values["roles"])
            for key in ("turns", "max_chars"):
                if key in values and (type(values[key]) is not int):
                    raise QueryPolicyError(f"query policy {key!r} must be an integer")
            if "separator" in values and not isinstance(values["separator"], str):
                raise QueryPolicyError("query policy 'separator' must be a string")
            return replace(defaults if defaults is not None else cls(), **values)
        except TypeError as exc:
            raise QueryPolicyError(f"query policy is malformed: {exc}") from exc

    def to_json(self) -> str:
        """The compact JSON of every field (the ``dars.query_policy`` value)."""
        data = asdict(self)
        data["roles"] = list(self.roles)
        return json.dumps(data, separators=(",", ":"))


DEFAULT_QUERY_POLICY = QueryPolicy()


def _last_user(turns: Sequence[Turn]) -> int:
    for index in range(len(turns) - 1, -1, -1):
        if turns[index][0] == "user":
            return index
    raise NoQueryText(
        "The request has no user message to route on.", index=None, code="no_user_message"
    )


def prepare_query(turns: Sequence[Turn], policy: QueryPolicy = DEFAULT_QUERY_POLICY) -> str:
    """The text the router sees for a conversation of ``(role, text)`` turns.

    The query is the last user message, stripped and cut to ``policy.max_chars``. With
    ``policy.turns > 1`` the previous messages of ``policy.roles`` that have text follow it,
    most recent first, each after ``policy.separator``, while the budget lasts.

    Raises :class:`NoQueryText` when there is no user message or the last one has no text.
    """
    anchor = _last_user(turns)
    query = turns[anchor][1].strip()
    if not query:
        raise NoQueryText(
            "The last user message has no text content to route on.",
            index=anchor,
            code="no_query_text",
        )
    parts = [query[: policy.max_chars]]
    budget = policy.max_chars - len(parts[0])
    for role, text in reversed(turns[:anchor]):
        if len(parts) >= policy.turns or budget <= len(policy.separator):
            break
        context = text.strip()
        if role not in policy.roles or not context:
            continue
        context = context[: budget - len(policy.separator)]
        parts.append(context)
        budget -= len(policy.separator) + len(context)
    return policy.separator.join(parts)


def prepare_prompt(prompt: str, policy: QueryPolicy = DEFAULT_QUERY_POLICY) -> str:
    """A single-turn prompt (an observation's) as the router sees it; ``""`` if it has no text.

    The same as :func:`prepare_query` of one user message, so a router trained on prompts sees
    at serving time exactly what it was trained on for one-turn requests.
    """
    if not prompt.strip():
        return ""
    return prepare_query([("user", prompt)], policy)
