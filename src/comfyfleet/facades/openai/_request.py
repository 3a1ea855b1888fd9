"""An OpenAI images request read and checked, and turned into a template's parameters.

Which parameter an OpenAI field sets is the template's `openai` block, never a guess:
`prompt` sets every parameter it lists, `size` ("WxH") the two it lists (width, height), `n`
the one it names (a batch in one job), `image` and `mask` the image parameters, and `quality`,
`style` and `background` the parameter each names. A field the block does not map:

- `n` without an `n` entry runs n jobs of the template (each with its own random seed);
- `size` other than `auto` is refused (the template makes images of the size it makes);
- `mask` is refused (the model has nothing to take it);
- `quality`, `style`, `background` and OpenAI's other rendering hints are accepted and change
  nothing, as a model that has no such setting ignores them.

Every refusal is a 400 naming the OpenAI field (`param`), and for a value outside a bound, the
template parameter and the bound it breaks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.facades.openai._errors import invalid
from comfyfleet.gateway import ApiError
from comfyfleet.templates import ParameterError, Template

URL = "url"
B64_JSON = "b64_json"
RESPONSE_FORMATS = (URL, B64_JSON)
MAPPED_HINTS = ("quality", "style", "background")
"""Fields a template may map to a parameter; unmapped, they are accepted without effect."""
_HINTS = (
    *MAPPED_HINTS,
    "moderation",
    "output_compression",
    "input_fidelity",
    "partial_images",
)
_COMMON = (
    "model",
    "prompt",
    "n",
    "size",
    "response_format",
    "user",
    "safety_identifier",
    "output_format",
    "stream",
    *_HINTS,
)
GENERATION_FIELDS = frozenset(_COMMON)
EDIT_FIELDS = frozenset((*_COMMON, "image", "image[]", "mask"))
_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")
_MAX_USER = 256


@dataclass(frozen=True)
class ImageRequest:
    """The fields of one request, checked for shape (bounds are the template's to check)."""

    model: str | None
    prompt: str
    n: int = 1
    size: tuple[int, int] | None = None
    """None: the template's own size (`size` absent or `auto`)."""
    response_format: str = URL
    hints: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None


def read_request(fields: Mapping[str, Any], *, allowed: frozenset[str]) -> ImageRequest:
    """The request in `fields` (a JSON body, or a multipart form's text fields, whose values
    are strings), or a 400 naming the field."""
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise invalid(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0])
    _check_output(fields)
    hints = {}
    for name in MAPPED_HINTS:
        if fields.get(name) is not None:
            hints[name] = _string(fields, name)
    return ImageRequest(
        model=_optional_string(fields, "model"),
        prompt=_prompt(fields),
        n=_count(fields.get("n")),
        size=_size(fields.get("size")),
        response_format=_response_format(fields.get("response_format")),
        hints=hints,
        user=_user(fields),
    )


def _check_output(fields: Mapping[str, Any]) -> None:
    stream = fields.get("stream")
    if stream not in (None, False, "false", "False"):
        raise invalid(
            "streaming partial images is not supported here; leave 'stream' out", "stream"
        )
    output_format = fields.get("output_format")
    if output_format not in (None, "png"):
        raise invalid(
            f"output_format {str(output_format)[:20]!r} is not supported: the images are PNG",
            "output_format",
        )


def _prompt(fields: Mapping[str, Any]) -> str:
    prompt = fields.get("prompt")
    if prompt is None:
        raise invalid(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("'prompt' must be a non-empty string", "prompt")
    return prompt


def _string(fields: Mapping[str, Any], name: str) -> str:
    value = fields[name]
    if not isinstance(value, str):
        raise invalid(f"'{name}' must be a string", name)
    return value


def _optional_string(fields: Mapping[str, Any], name: str) -> str | None:
    return None if fields.get(name) in (None, "") else _string(fields, name)


def _user(fields: Mapping[str, Any]) -> str | None:
    name = "safety_identifier" if fields.get("safety_identifier") else "user"
    user = _optional_string(fields, name)
    if user is not None and len(user) > _MAX_USER:
        raise invalid(f"'{name}' must be at most {_MAX_USER} characters", name)
    return user


def _count(value: Any) -> int:
    if value is None:
        return 1
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"'n' must be an integer (got {str(value)[:20]!r})", "n")
    if value < 1:
        raise invalid(f"'n' must be at least 1 (got {value})", "n")
    return value


def _size(value: Any) -> tuple[int, int] | None:
    if value is None or value == "auto":
        return None
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise invalid(
            f"'size' must be WIDTHxHEIGHT, such as 512x512, or auto (got {str(value)[:20]!r})",
            "size",
        )
    return int(match.group(1)), int(match.group(2))


def _response_format(value: Any) -> str:
    if value is None:
        return URL
    if value not in RESPONSE_FORMATS:
        raise invalid(
            f"'response_format' must be url or b64_json (got {str(value)[:20]!r})",
            "response_format",
        )
    return str(value)


# --- onto the template ------------------------------------------------------------------------


def _targets(template: Template, name: str) -> tuple[str, ...]:
    mapping = template.openai or {}
    entry = mapping.get(name)
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def takes_images(template: Template) -> bool:
    """Whether the template edits images (its block maps `image`): an /images/edits model."""
    return bool(_targets(template, "image"))


def job_count(template: Template, request: ImageRequest, max_images: int) -> int:
    """How many jobs the request takes: one when the template maps `n` (its bound is checked
    with the other parameters), else `n`, at most `max_images`."""
    if _targets(template, "n"):
        return 1
    if request.n > max_images:
        raise invalid(
            f"'n' must be at most {max_images} for model '{template.name}' (got {request.n})",
            "n",
        )
    return request.n


def template_params(
    template: Template,
    request: ImageRequest,
    images: Sequence[str] = (),
    mask: str | None = None,
) -> dict[str, Any]:
    """The template parameters the request sets (images and mask as `asset:<id>` values)."""
    params: dict[str, Any] = dict.fromkeys(_targets(template, "prompt"), request.prompt)
    for name in _targets(template, "n"):
        params[name] = request.n
    if request.size is not None:
        sized = _targets(template, "size")
        if not sized:
            raise invalid(
                f"model '{template.name}' makes images of one size (its template maps no "
                "'size'); leave 'size' out or send auto",
                "size",
            )
        params[sized[0]], params[sized[1]] = request.size
    for hint, value in request.hints.items():
        for name in _targets(template, hint):
            params[name] = value
    params.update(_image_params(template, images, mask))
    return params


def _image_params(template: Template, images: Sequence[str], mask: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    slots = _targets(template, "image")
    if len(images) > len(slots):
        raise invalid(
            f"model '{template.name}' takes at most {len(slots)} image(s) (got {len(images)})",
            "image",
        )
    params.update(zip(slots, images, strict=False))
    if mask is not None:
        masks = _targets(template, "mask")
        if not masks:
            raise invalid(f"model '{template.name}' takes no mask", "mask")
        params[masks[0]] = mask
    return params


def resolved(template: Template, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter's value, or a 400 naming the OpenAI field that set the one at fault."""
    try:
        return template.resolve(params)
    except ParameterError as exc:
        raise _parameter_error(template, exc) from exc


def _parameter_error(template: Template, exc: ParameterError) -> ApiError:
    fields = [
        f
        for f, targets in (template.openai or {}).items()
        if exc.parameter in ((targets,) if isinstance(targets, str) else targets)
    ]
    if not fields:
        return ApiError(
            400,
            "template_error",
            f"model '{template.name}' cannot run from an OpenAI request: {exc.message} "
            "(no OpenAI field sets that parameter; give it a default in the template)",
            {"param": None, "parameter": exc.parameter},
        )
    return ApiError(
        400,
        "invalid_value",
        f"'{fields[0]}' does not suit model '{template.name}': {exc.message}",
        {"param": fields[0], **exc.details()},
    )
