"""The figure checker of the tests of minigpt.interp.plots and of the studies that draw with it: every visible axes
labelled, a title, colorbars labelled, readable annotations, and something drawn (``checked`` is a fixture)."""
import matplotlib.image as mpimg
import pytest

from minigpt.interp import plots


def _is_twin(ax, fig):
    return any(o is not ax and (ax.get_shared_x_axes().joined(ax, o) or ax.get_shared_y_axes().joined(ax, o))
               and ax.get_position().bounds == o.get_position().bounds for o in fig.axes)


def check_figure(fig):
    """Every visible axes has x and y labels (a twin: its own y label; a colorbar: its label); the figure has a title."""
    titles = [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]
    assert any(t.strip() for t in titles), "no title"
    for ax in fig.axes:
        if not ax.axison:
            continue
        if ax.get_label() == "<colorbar>":
            assert (ax.get_ylabel() or ax.get_xlabel()).strip(), "colorbar without a label"
        elif _is_twin(ax, fig):
            assert ax.get_ylabel().strip() or ax.get_xlabel().strip(), "twin axes without a label"
        else:
            assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), f"axes {ax.get_title()!r} lacks an axis label"
    for ax in fig.axes:  # annotations on images: dark on pale cells, white on dark ones
        for im in ax.get_images():
            for t in ax.texts:
                x, y = t.get_position()
                r, g, b, _ = im.cmap(im.norm(im.get_array()[int(round(y)), int(round(x))]))
                lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
                assert (t.get_color() == "black") == (lum > 0.5), (t.get_text(), t.get_color(), lum)


@pytest.fixture
def checked(monkeypatch):
    """Wrap plots._save: check each figure before saving it; after saving, check the PNG is not blank."""
    seen = []
    real = plots._save

    def save(fig, path):
        check_figure(fig)
        out = real(fig, path)
        img = mpimg.imread(out)[..., :3]
        assert img.std() > 0.05, f"{path} looks blank (pixel sd {img.std():.3f})"
        seen.append(out)
        return out

    monkeypatch.setattr(plots, "_save", save)
    return seen
