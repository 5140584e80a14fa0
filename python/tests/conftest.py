import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def rng(request):
    """Fresh random inputs every run; PAGEDATTN_TEST_SEED pins the seed, which is printed on failure."""
    seed = int(os.environ.get("PAGEDATTN_TEST_SEED", np.random.SeedSequence().entropy % (1 << 63)))
    request.node.user_properties.append(("seed", seed))
    print(f"seed {seed}")
    return np.random.default_rng(seed)
