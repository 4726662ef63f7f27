"""The text the router scores, prepared by the trainer's own function under the router's policy.

Text parts only (images, audio and files carry no text the router can embed), then
:func:`router_models.query_prep.prepare_query`, the function the trainer uses too. Which
policy: the router file's ``dars.query_policy``, else ``DARS_QUERY_POLICY``, else the default
(the last user message, cut to ``DARS_QUERY_MAX_CHARS``). A request without user text cannot be
routed and is the client's error (400), never a crash on ``messages[-1]["content"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

from app.errors import InvalidRequest, RouterUnavailable
from app.protocol import ChatCompletionRequest, ContentPart
from router_models.contract import META_QUERY_POLICY
from router_models.query_prep import NoQueryText, QueryPolicy, QueryPolicyError, Turn, prepare_query

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = ["content_text", "query_policy", "query_text"]


def content_text(content: str | list[ContentPart] | None) -> str:
    """The text of one message's content: the string, or its text parts joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content if part.type == "text" and part.text)


def query_text(request: ChatCompletionRequest, policy: QueryPolicy) -> str:
    """The router's text for ``request`` under ``policy`` (see :func:`query_policy`).

    Raises ``InvalidRequest`` when there is no user message or the last one has no text.
    """
    turns: list[Turn] = [(m.role, content_text(m.content)) for m in request.messages]
    try:
        return prepare_query(turns, policy)
    except NoQueryText as exc:
        param = "messages" if exc.index is None else f"messages[{exc.index}].content"
        raise InvalidRequest(str(exc), param=param, code=exc.code) from exc


def query_policy(settings: Settings, metadata: Mapping[str, str]) -> QueryPolicy:
    """The policy a router is served with: its file's, else the setting, else the default.

    ``metadata`` is the router file's; ``DARS_QUERY_POLICY`` is JSON (checked when settings
    load; keys it omits take their defaults, ``max_chars`` that of ``DARS_QUERY_MAX_CHARS``).
    Cached, as it is called once per request. Raises ``RouterUnavailable`` for a file whose
    policy is malformed.
    """
    text = metadata.get(META_QUERY_POLICY)
    if text is None:
        return _setting_policy(settings.query_policy, settings.query_max_chars)
    try:
        return _file_policy(text)
    except QueryPolicyError as exc:
        raise RouterUnavailable(f"the router file's {META_QUERY_POLICY} is not valid") from exc


@lru_cache(maxsize=8)
def _file_policy(text: str) -> QueryPolicy:
    return QueryPolicy.from_json(text)


@lru_cache(maxsize=8)
def _setting_policy(setting: str | None, max_chars: int) -> QueryPolicy:
    defaults = QueryPolicy(max_chars=max_chars)
    return defaults if setting is None else QueryPolicy.from_json(setting, defaults=defaults)
