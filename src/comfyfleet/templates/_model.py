"""What a template is: an API-format graph, the parameters that set its inputs, and the model
files it loads. A frozen record; building one from a file is `_parse`'s job, filling one in is
`_apply`'s, describing its parameters as JSON Schema is `_schema`'s."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.templates._apply import apply_params, resolve_params
from comfyfleet.templates._params import Parameter
from comfyfleet.templates._schema import parameters_schema


@dataclass(frozen=True)
class Template:
    """A named graph with declared parameters.

    `parameters` keeps the declared order (where two set the same input, the later one wins);
    `models` lists the files the graph loads by ComfyUI folder type; `preset` names the model
    preset that provides them; `openai` maps OpenAI images fields to parameter names (only
    templates with it are offered as OpenAI models); `source` says which file it came from."""

    name: str
    workflow: Mapping[str, Any]
    parameters: Mapping[str, Parameter] = field(default_factory=dict)
    description: str = ""
    models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    preset: str | None = None
    openai: Mapping[str, str | tuple[str, ...]] | None = None
    source: str = ""

    def schema(self) -> dict[str, Any]:
        """The parameters as a JSON Schema object (draft 2020-12)."""
        return parameters_schema(self.name, self.description, self.parameters)

    def resolve(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter's value for one job: the given ones checked, defaults and random
        values filled in (an optional parameter left out stays out). Raises `ParameterError`."""
        return resolve_params(self.name, self.parameters, params)

    def apply(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A fresh API graph with `params` checked and set; raises `ParameterError` naming the
        parameter and the bound (or listing the known parameters for an unknown name)."""
        return apply_params(self.workflow, self.parameters, self.resolve(params))

    def model_keys(self) -> list[str]:
        """The model files as `folder_type/name`, as jobs and the fleet registry name them."""
        return [f"{kind}/{name}" for kind, names in self.models.items() for name in names]
