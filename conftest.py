"""Point the Omniglot loader at a local copy for tests and notebooks when one is on this machine."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
for candidate in (ROOT.parent / "shared" / "data", Path("/work/shared/data")):
    if "MAMLKIT_DATA" not in os.environ and (candidate / "omniglot").is_dir():
        os.environ["MAMLKIT_DATA"] = str(candidate)
