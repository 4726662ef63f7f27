"""Meaning-preserving rewrites of a shadow-sampled prompt, through the shadow budget.

Why: DARS labels weigh how a model does on a query *and its paraphrases* (input variance).
The collector (``router_models.collect.rewrite``) already has the prompt, the worked examples,
the clean-up of small models' wrappers and the checks that reject a "paraphrase" that changed
a number, a name or an answer option; this module reuses all of it and only adds what live
traffic needs: every rewrite call first takes a shadow slot and is charged to the day's USD
cap, no call is retried, and the endpoint's key is the judge's (never read from a file).

The checks run without the embedding-similarity step: the sampler does not hold the encoder.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.live.shadow_config import JudgeEndpoint
from router_models.collect.client import ChatClient, Completion, Endpoint
from router_models.collect.rewrite import RewriteChecker, Rewriter

__all__ = ["CallGate", "ShadowRewriter", "last_user_text", "with_user_text"]

_SEED_BASE = 2000  # rewrite calls' seeds, apart from the decodes' (1000 + n)


class CallGate(Protocol):
    """The shadow budget as a rewrite call sees it: wait for a slot, then pay."""

    def slot(self) -> Awaitable[None]: ...
    def charge(self, usd: float, kind: str) -> None: ...


@dataclass(frozen=True, kw_only=True)
class _KeyedEndpoint(Endpoint):
    """An :class:`Endpoint` whose key is given (from the settings), not read from the env."""

    key: str | None = field(default=None, repr=False)

    def api_key(self) -> str | None:
        return self.key


@dataclass
class _GatedChat(ChatClient):
    """A collector chat client whose every call waits for ``gate`` and is charged to it."""

    gate: CallGate | None = field(default=None, repr=False)

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int = 256,
        seed: int | None = None,
    ) -> Completion:
        if self.gate is None:
            raise RuntimeError("a shadow rewrite call needs the sampler's gate")
        await self.gate.slot()
        completion = await super().chat(
            messages, temperature=temperature, max_tokens=max_tokens, seed=seed
        )
        self.gate.charge(completion.cost, "rewrite")
        return completion


class ShadowRewriter:
    """Up to ``k`` checked paraphrases of one prompt from ``endpoint`` (at most ``2k`` calls)."""

    def __init__(self, endpoint: JudgeEndpoint, *, k: int, timeout_s: float = 60.0) -> None:
        self.k = k
        self._chat = _GatedChat(
            _KeyedEndpoint(
                name=f"rewriter:{endpoint.model}",
                base_url=endpoint.base_url,
                model=endpoint.model,
                key=endpoint.api_key,
                price_in=endpoint.price_input_per_mtok,
                price_out=endpoint.price_output_per_mtok,
                timeout=timeout_s,
                max_attempts=1,  # shadow calls are never retried
            )
        )
        self._rewriter = Rewriter(client=self._chat, checker=RewriteChecker(), k=k)
        self._open = False

    async def rewrite(self, prompt: str, gate: CallGate) -> list[str]:
        """The accepted paraphrases, in order (fewer than ``k`` when some were rejected).

        Raises what the gate raises (over budget) and ``CollectError`` when a call fails.
        """
        if not self._open:
            await self._chat.__aenter__()
            self._open = True
        self._chat.gate = gate
        result = await self._rewriter.rewrite(prompt, seeds=lambda i: _SEED_BASE + i)
        return result.accepted

    async def aclose(self) -> None:
        if self._open:
            await self._chat.__aexit__(None, None, None)
            self._open = False


def last_user_text(body: Mapping[str, Any]) -> str | None:
    """The text of the last user message of a chat body, when it is a plain string."""
    messages = body.get("messages")
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) and content.strip() else None
    return None


def with_user_text(body: Mapping[str, Any], text: str) -> dict[str, Any]:
    """A copy of ``body`` whose last user message says ``text`` (the rest unchanged)."""
    messages = [dict(m) if isinstance(m, dict) else m for m in body.get("messages") or []]
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            message["content"] = text
            break
    return {**body, "messages": messages}
