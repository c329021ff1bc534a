"""What every step of the method shares for one recipe: vocabulary, concept sheet, templates, limits.

Questions depend only on the vocabulary, the concept sheet and the templates, never on the image,
so each one is rendered once and kept here (`memo`). Setting another concept sheet (calibration
tries one per round) forgets them, so the next request is rendered from the new sheet.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, TypeVar

from builder.prompts.render import Template

if TYPE_CHECKING:
    from builder.recipe.concepts import ConceptSheet
    from builder.recipe.model import LoadedRecipe

T = TypeVar("T")


class TaggingContext:
    """Vocabulary, concept sheet, thresholds and templates of a recipe, ready to build requests."""

    def __init__(self, loaded: LoadedRecipe):
        spec = loaded.recipe.tagging
        self.loaded = loaded
        self.vocab = loaded.vocab
        self.names = tuple(self.vocab.names)  # read for every image: not rebuilt from the groups each time
        self._concepts = loaded.concepts
        self._memo: dict[Hashable, Any] = {}
        self.system = spec.system_prompt
        self.temperature = spec.temperature
        self.stage1_max_tokens = spec.stage1_max_tokens
        self.ensemble = spec.ensemble
        self.stage1 = Template.load(loaded.path(spec.stage1_template), "stage1.j2")
        self.stage1_alt = Template.load(None, "stage1_alt.j2")
        self.stage2 = Template.load(loaded.path(spec.stage2_template), "stage2.j2")
        self.all_in_one = Template.load(None, "all_in_one.j2")
        self.open_ended = Template.load(None, "open_ended.j2")
        self.max_pixels = loaded.recipe.engine.max_pixels
        self.limit_pixels = loaded.recipe.output.max_image_pixels
        self.decode_budget = loaded.recipe.output.decode_pixel_budget

    @property
    def concepts(self) -> ConceptSheet:
        return self._concepts

    @concepts.setter
    def concepts(self, sheet: ConceptSheet) -> None:
        self._concepts = sheet
        self._memo.clear()  # questions rendered from the old sheet no longer apply

    def memo(self, key: Hashable, make: Callable[[], T]) -> T:
        """`make()` once per key for this vocabulary + concept sheet."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def threshold(self, label: str) -> float:
        return self.loaded.threshold(label)
