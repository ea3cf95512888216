import sys
from pathlib import Path

import pytest
import torch

# the reference solutions are instructor material outside the installed package: `import solutions`
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "instructor"))

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA not available"))]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
