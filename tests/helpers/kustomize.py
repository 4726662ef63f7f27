"""A small kustomize renderer for the tests: exactly the features ``deploy/k8s`` uses.

kustomize itself is not packaged for Debian or PyPI, so CI renders the overlays with this and
``tests/unit/test_k8s.py`` checks it against ``kubectl kustomize`` wherever kubectl exists.
Supported kustomization fields: ``resources`` (files and directories with a kustomization),
``patches`` (strategic-merge patch files, targeted by their own kind and name) and ``images``
(``newName``/``newTag``). Any other field raises ``UnsupportedKustomization``, so an overlay
can never silently render differently here than with kustomize.

Strategic merge, as Kubernetes defines it for the fields used: maps merge recursively, ``null``
deletes a key, the lists in ``MERGE_KEYS`` merge item by item on their key, other lists are
replaced. New items of a merged list come first, as kustomize orders them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MERGE_KEYS", "UnsupportedKustomization", "render", "strategic_merge"]

Manifest = dict[str, Any]

# Field name -> merge key (patchMergeKey of the Kubernetes API types) for the lists we patch.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "name",
    "ports": "containerPort",
}
SUPPORTED_FIELDS = frozenset({"apiVersion", "kind", "resources", "patches", "images"})


class UnsupportedKustomization(ValueError):
    """The kustomization uses a field or a form this renderer does not implement."""


def strategic_merge(base: Any, patch: Any, field: str | None = None) -> Any:
    """``patch`` applied to ``base`` (neither is modified)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        merged_list = [copy.deepcopy(item) for item in base]
        added: list[Any] = []
        for item in patch:
            index = next((i for i, b in enumerate(merged_list) if b.get(key) == item[key]), None)
            if index is None:
                added.append(copy.deepcopy(item))
            else:
                merged_list[index] = strategic_merge(merged_list[index], item, field)
        return added + merged_list  # kustomize puts new items first, in the patch's order
    return copy.deepcopy(patch)


def _set_images(manifest: Manifest, images: list[dict[str, str]]) -> None:
    spec = manifest.get("spec", {}).get("template", {}).get("spec", {})
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name, _, tag = container["image"].partition(":")
        for image in images:
            if image["name"] == name:
                extra = set(image) - {"name", "newName", "newTag"}
                if extra:
                    raise UnsupportedKustomization(f"images: unsupported {sorted(extra)}")
                name = image.get("newName", name)
                tag = image.get("newTag", tag)
                container["image"] = f"{name}:{tag}" if tag else name


def render(directory: Path) -> list[Manifest]:
    """The objects of the kustomization in ``directory``, in kustomize's resource order."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_FIELDS
    if unknown:
        raise UnsupportedKustomization(f"{directory}: unsupported fields {sorted(unknown)}")
    manifests: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            manifests.extend(render(path))
        else:
            manifests.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for entry in kustomization.get("patches", []):
        if set(entry) != {"path"}:
            raise UnsupportedKustomization(f"patches: only `path` entries, got {entry}")
        patch = yaml.safe_load((directory / entry["path"]).read_text())
        target = (patch["kind"], patch["metadata"]["name"])
        indices = [
            i for i, m in enumerate(manifests) if (m["kind"], m["metadata"]["name"]) == target
        ]
        if len(indices) != 1:
            raise UnsupportedKustomization(f"patch {entry['path']} matches {len(indices)} objects")
        manifests[indices[0]] = strategic_merge(manifests[indices[0]], patch)
    for manifest in manifests:
        _set_images(manifest, kustomization.get("images", []))
    return manifests
