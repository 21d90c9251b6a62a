import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from hypothesis import HealthCheck, settings  # noqa: E402

# CI runs the suite on 2 loaded cores, where a Ray worker starting next door can stall one draw for
# a second: the property tests assert behaviour, not the speed of generating their inputs
settings.register_profile("loaded", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("loaded")
