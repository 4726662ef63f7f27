"""Read a Dockerfile's stages without a container engine (``tests/unit/test_images.py`` and the
``llm`` tier's run of the ``local-llm`` stage, ``tests/llm/test_local_llm_image.py``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DOCKERFILE", "Stage", "parse_dockerfile", "stages_by_name"]

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


@dataclass
class Stage:
    """One ``FROM`` stage: its base image (ARG defaults substituted) and instructions."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        """The stage's ``ENV`` settings (``KEY=VALUE`` form, values unquoted, as written)."""
        settings: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in args.split():
                key, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"ENV without '=' is not supported: {args!r}")
                settings[key] = value
        return settings

    def exec_form(self, keyword: str) -> list[str]:
        """The single ``CMD`` (or ``HEALTHCHECK ... CMD``) in exec (JSON) form, as a list."""
        (args,) = self.all(keyword)
        if keyword == "HEALTHCHECK":
            args = args[args.index(" CMD ") + len(" CMD ") :]
        command = json.loads(args)
        if not (isinstance(command, list) and all(isinstance(a, str) for a in command)):
            raise ValueError(f"{keyword} is not in exec form: {args!r}")
        return command


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comments dropped, global ARGs applied."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            image, *rest = args.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], image)
            name = rest[1] if len(rest) == 2 and rest[0].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=image))
        else:
            stages[-1].instructions.append((keyword, args))
    return stages


def stages_by_name(path: Path = DOCKERFILE) -> dict[str, Stage]:
    return {stage.name: stage for stage in parse_dockerfile(path.read_text())}
