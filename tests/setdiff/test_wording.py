import pytest

from seeinpairs.setdiff.wording import opposed


@pytest.mark.parametrize("a, b, expected", [
    ("a lesion in the left lung", "a lesion in the right lung", True),
    ("a lesion in the left lung", "left lung lesion", False),
    ("larger heart", "smaller heart", True),
    ("an older patient", "an elderly patient", False),
    ("lesions in the left and right lungs", "a lesion in the right lung", False),
    ("a female patient", "a male patient", True),
])
def test_opposed(a, b, expected):
    assert opposed(a, b) is expected and opposed(b, a) is expected
