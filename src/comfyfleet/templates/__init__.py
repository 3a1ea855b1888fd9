"""Workflow templates: an API-format graph with declared parameters (name, type, default,
bounds or choices, the inputs each one sets) and the model files it loads, in one YAML or JSON
file.

A :class:`TemplateLibrary` holds the shipped templates (`txt2img`, `img2img`, `inpaint`,
`upscale`, `batch` for SD1.5, and the same with `-sdxl` for SDXL), the workspace's `templates/`
and the configured folders; `Template.apply(params)` gives the graph to run as an ordinary
job. `propose_parameters` reads a saved API-format graph for the inputs worth declaring;
`template_document` and `template_yaml` turn the kept ones into a template file.
"""

from __future__ import annotations

from comfyfleet.templates._dump import template_yaml
from comfyfleet.templates._errors import (
    ParameterError,
    TemplateError,
    TemplateFileError,
    TemplateNotFound,
)
from comfyfleet.templates._library import BrokenTemplate, TemplateLibrary
from comfyfleet.templates._load import load_template, parse_text, shipped_templates
from comfyfleet.templates._model import Template
from comfyfleet.templates._params import RANDOM, Parameter, ParamType, Target
from comfyfleet.templates._parse import parse_template
from comfyfleet.templates._propose import Proposal, propose_parameters, template_document
from comfyfleet.templates._settings import TemplateSettings

__all__ = [
    "RANDOM",
    "BrokenTemplate",
    "ParamType",
    "Parameter",
    "ParameterError",
    "Proposal",
    "Target",
    "Template",
    "TemplateError",
    "TemplateFileError",
    "TemplateLibrary",
    "TemplateNotFound",
    "TemplateSettings",
    "load_template",
    "parse_template",
    "parse_text",
    "propose_parameters",
    "shipped_templates",
    "template_document",
    "template_yaml",
]
