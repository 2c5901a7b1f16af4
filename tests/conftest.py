"""Fixtures shared by the test modules (real-data helpers live in ``tests/realdata.py``)."""
import pytest

from tests import realdata


@pytest.fixture(scope="module")
def static_tracker():
    """A FaceTracker for still images (no smoothing, no track state)."""
    from warpcam.realtime.tracker import FaceTracker

    with FaceTracker(static_images=True) as tr:
        yield tr


@pytest.fixture(scope="module")
def astronaut():
    """The scikit-image astronaut, BGR, read-only: shared by every test, nobody writes into it."""
    img = realdata.astronaut_bgr().copy()
    img.flags.writeable = False
    return img


@pytest.fixture(scope="module")
def astronaut_face():
    """The astronaut's one tracked face (still-image tracking)."""
    from warpcam.realtime.tracker import FaceTracker

    with FaceTracker(max_faces=1, static_images=True) as tr:
        faces = tr.track(realdata.astronaut_bgr())
    assert len(faces) == 1
    return faces[0]


@pytest.fixture(scope="module")
def host():
    """The g++ host build of the CUDA per-pixel functions (skip without a compiler)."""
    from warpcam.kernels import hostbuild

    if hostbuild.find_compiler() is None:
        pytest.skip("no C++ compiler (g++ or $CXX): cannot build the host copy of the kernels")
    return hostbuild.load()
