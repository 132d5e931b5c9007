import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "npar",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("npar")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def shared_data_dir():
    """The workplace copy of the data, if the environment points to it."""
    return os.environ.get("NPAR_SHARED_DATA")
