"""Chinese text normalization: named, versioned profiles whose rules are data (profiles.json)."""

from asr_eval.text.normalizer import (
    DEFAULT_PROFILE,
    NormalizerProfile,
    get_profile,
    list_profiles,
    normalize,
    normalize_many,
)

__all__ = ["DEFAULT_PROFILE", "NormalizerProfile", "get_profile", "list_profiles", "normalize", "normalize_many"]
