"""The text the router scores: the last user message, text parts only, truncated.

The router was trained on single queries, so the latest user turn is what it should see; images,
audio and files carry no text it can embed. A request without such text cannot be routed and is
the client's error (400), never a crash on ``messages[-1]["content"]``.
"""

from __future__ import annotations

from app.errors import InvalidRequest
from app.protocol import ChatCompletionRequest, ContentPart

__all__ = ["content_text", "query_text"]


def content_text(content: str | list[ContentPart] | None) -> str:
    """The text of one message's content: the string, or its text parts joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content if part.type == "text" and part.text)


def query_text(request: ChatCompletionRequest, *, max_chars: int) -> str:
    """The stripped text of the last user message, cut to ``max_chars`` characters.

    Raises ``InvalidRequest`` when there is no user message or it has no text.
    """
    for index in range(len(request.messages) - 1, -1, -1):
        message = request.messages[index]
        if message.role != "user":
            continue
        text = content_text(message.content).strip()
        if not text:
            raise InvalidRequest(
                "The last user message has no text content to route on.",
                param=f"messages[{index}].content",
                code="no_query_text",
            )
        return text[:max_chars]
    raise InvalidRequest(
        "The request has no user message to route on.", param="messages", code="no_user_message"
    )
