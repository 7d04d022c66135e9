"""What a labelled image folder says about itself, and what it must not hold: too few images of a
class, one file name in two classes, fewer than two classes."""

from __future__ import annotations

import pytest
from cityfactory.profiling.drafts import DraftRequest, ScaffoldError
from cityfactory.profiling.image_folders import profile_image_folder
from cityfactory.tasktypes.image_classification.scaffold import (
    draft_classifier,
    replay_index,
)
from support import inspection_images


def test_classes_images_and_a_mixed_replay_order(tmp_path):
    folder = inspection_images(tmp_path / "line", per_class=12, size=48)
    (folder / "cracked" / "readme.md").write_text("#")
    profile = profile_image_folder(folder)
    assert profile.classes == ("cracked", "intact") and profile.per_class() == {"cracked": 12, "intact": 12}
    assert profile.mode == "L" and profile.formats == ["PNG"] and profile.notes == ["left out, not images: cracked/readme.md"]
    lines = replay_index(profile).decode().splitlines()
    assert len(lines) == 24 and lines[0].count(",") == 1
    assert {line.split(",")[1] for line in lines[:8]} == {"cracked", "intact"}, "classes mixed over the days"
    draft = draft_classifier("line", profile, DraftRequest(dataset="line", domain="city_management", pins={}))
    assert draft.series == ("cam-1", "cam-2") and set(draft.dataset_files) == {"index.csv"}
    assert 'classes: ["cracked", "intact"]' in draft.model_spec and "size: 48" in draft.model_spec


def test_what_cannot_be_replayed_is_refused(tmp_path):
    folder = inspection_images(tmp_path / "few", per_class=12, size=32)
    for extra in list((folder / "intact").iterdir())[3:]:
        extra.unlink()
    with pytest.raises(ScaffoldError, match=r"classes with fewer than 10 images: intact \(3\)"):
        profile_image_folder(folder)
    folder = inspection_images(tmp_path / "shared", per_class=12, size=32)
    (folder / "intact" / "intact_000.png").rename(folder / "intact" / "cracked_000.png")
    with pytest.raises(ScaffoldError, match=r"file names in more than one class folder \(cracked_000\.png\)"):
        profile_image_folder(folder)
    (tmp_path / "flat").mkdir()
    with pytest.raises(ScaffoldError, match="one subfolder per class, at least two"):
        profile_image_folder(tmp_path / "flat")
