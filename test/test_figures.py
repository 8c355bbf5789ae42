"""training.figures: side-by-side anomaly maps on real CamVid-Paste frames."""

import pytest

from training.figures import main


def _args(checkpoint, frames, out, *extra):
    return ["--models", f"a={checkpoint}", f"b={checkpoint}", "--scores", "jsd,msp",
            "--images", str(frames / "images"), "--labels", str(frames / "labels"),
            "--out", str(out), *extra]


def test_figure_of_chosen_frames(checkpoint, camvid_paste_frames, tmp_path):
    stem = sorted(p.stem for p in (camvid_paste_frames / "images").glob("*.png"))[1]
    out = tmp_path / "maps.png"
    main(_args(checkpoint, camvid_paste_frames, out, "--stems", stem))
    assert out.stat().st_size > 10_000


def test_unknown_stem_is_named(checkpoint, camvid_paste_frames, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(_args(checkpoint, camvid_paste_frames, tmp_path / "maps.png",
                   "--stems", "no_such_frame"))
    assert "no_such_frame" in capsys.readouterr().err
    assert not (tmp_path / "maps.png").exists()
