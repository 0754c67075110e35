"""The salon's style catalog: `[[styles]]` in catalog.toml, beside the services.

Each style has a code (used in buttons and the `preview_style` tool), a name and a short description
customers see, and the edit instruction the image model gets. The file is read at start-up, like
the services: edit catalog.toml and restart to change them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ANGLES = ("front", "side", "back")
ANGLE_WORDS = {
    "front": "Show the dog from the front, looking at the camera.",
    "side": "Show the dog in profile, from the side.",
    "back": "Show the dog from behind, three-quarter view.",
}


class StyleCatalogError(ValueError):
    """catalog.toml's [[styles]] entry is malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class Style:
    code: str
    name: str
    description: str
    instruction: str

    def prompt(self, angle: str) -> str:
        """The model's instruction: the style, the angle, and what must not change."""
        keep = (
            "Keep this exact dog: its face, eye colour, coat colour and markings, and build. "
            "A realistic photo, natural light, no text."
        )
        view = "" if angle == "front" else " " + ANGLE_WORDS[angle]
        return f"{self.instruction}{view} {keep}"


def parse_styles(data: dict[str, Any]) -> tuple[Style, ...]:
    styles: list[Style] = []
    seen: set[str] = set()
    for n, raw in enumerate(data.get("styles") or []):
        where = f"styles[{n}]"
        try:
            style = Style(
                str(raw["code"]), str(raw["name"]), str(raw.get("description", "")), str(raw["instruction"])
            )
        except (KeyError, TypeError) as exc:
            raise StyleCatalogError(f"{where}: missing {exc}") from None
        if not style.code.isascii() or not style.code.replace("_", "").isalnum() or len(style.code) > 30:
            raise StyleCatalogError(f"{where}: code must be letters, digits and _ (≤ 30)")
        if style.code in seen:
            raise StyleCatalogError(f"{where}: duplicate code {style.code!r}")
        seen.add(style.code)
        styles.append(style)
    return tuple(styles)


def load_styles(path: str | Path) -> tuple[Style, ...]:
    """The styles of a catalog file; () when it has none (then no previews are offered)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return ()
    return parse_styles(tomllib.loads(text))
