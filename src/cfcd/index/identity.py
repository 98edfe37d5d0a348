"""What an index's descriptors were made with (model, extraction settings, dimension), and
the check that descriptors made otherwise never enter or query it."""

from __future__ import annotations

from ..errors import MismatchError


class IndexMismatchError(MismatchError):
    """Descriptors made with another model, dimension or extraction settings than the index's."""


def normalise_settings(settings, model=None) -> dict | None:
    """The extraction settings an index stores and compares (an ``ExtractionSettings``, a
    features manifest or a dict): every field present (an older index's missing ones filled in,
    see ``ExtractionSettings.from_dict``), the preparation resolved against ``model``."""
    if settings is None:
        return None
    from ..settings import ExtractionSettings, resolve

    if isinstance(settings, ExtractionSettings):
        settings = resolve(None, settings, model).to_dict()
    return ExtractionSettings.from_dict(settings).to_dict()


def model_identity(model) -> dict | None:
    """The identity stored with an index: a model object or an already described one."""
    if model is None or isinstance(model, dict):
        return model
    from ..extraction import describe_model

    return describe_model(model)


def check_compatible(index, model=None, settings=None, dim: int | None = None) -> None:
    """Raise ``IndexMismatchError`` unless descriptors made by ``model`` with ``settings``
    (either may be None: not checked) and of dimension ``dim`` belong in ``index`` (anything
    with the stored ``model``, ``settings`` and ``dim``)."""
    info = model_identity(model)
    if dim is not None and dim != index.dim:
        raise IndexMismatchError(f"descriptors are {dim}-d but the index holds {index.dim}-d descriptors")
    if info is not None and index.model is not None and not _same_model(info, index.model):
        raise IndexMismatchError(
            f"query model {info.get('name')!r} ({info.get('config')}) differs from the index's model "
            f"{index.model.get('name')!r} ({index.model.get('config')}); search with the index's model "
            "(the default) or rebuild the index"
        )
    s = normalise_settings(settings, info or index.model)
    if s is not None and index.settings is not None and s != index.settings:
        differ = {k: v for k, v in s.items() if index.settings.get(k) != v}
        raise IndexMismatchError(
            f"extraction settings {differ} differ from the index's "
            f"{ {k: index.settings.get(k) for k in differ} }; use the index's settings (the default) or rebuild the index"
        )


def _same_model(a: dict, b: dict) -> bool:
    # Imported here: a search from descriptors (no model given) never loads torch.
    from ..extraction import same_model

    return same_model(a, b)
