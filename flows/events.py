"""Prefect events our flows emit when a version lands; deployments trigger on them."""

from __future__ import annotations

from prefect.events import emit_event

from omniforge.storage import Manifest

PUBLISHED = "omniforge.version.published"


def announce(manifest: Manifest, store_url: str) -> None:
    """Tell the Prefect server that `manifest` was published (training and evaluation react to it)."""
    emit_event(event=PUBLISHED, resource={
        "prefect.resource.id": f"omniforge.{manifest.kind.value}.{manifest.name}",
        "omniforge.kind": manifest.kind.value, "omniforge.name": manifest.name,
        "omniforge.version": str(manifest.version), "omniforge.store": store_url,
    }, payload={"ref": str(manifest.ref()), "stats": {k: v for k, v in manifest.stats.items()
                                                      if isinstance(v, (int, float, str, bool))}})
